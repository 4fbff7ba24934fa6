//! Detection (DET-1…4) and the incident lifecycle.
//!
//! The [`Detector`] receives, from the shards, a [`Trigger`] the moment a
//! host's sliding one-second window crosses a static pps/bps threshold,
//! and every second the hosts that had traffic. It checks each host against
//! its hostgroup's static thresholds (all of them, per class) and, once
//! learnt, its own baseline; feeds baselines with the seconds that are not
//! part of an incident; and runs incidents:
//!
//! - an incident **starts** when a host is over a threshold for
//!   `trigger_seconds` (at 1, the trigger starts it at once — `detected_at`
//!   is the moment the window crossed);
//! - it is **updated** every second it stays over: timeline, peaks, the
//!   details merged and the attack classified again — over the whole
//!   incident (what it is reported as) and over its last
//!   [`RECENT_SECONDS`] seconds (what a rule is built from now: rules
//!   follow an attack that changes vector);
//! - while the evidence comes in, it is classified sooner than once a
//!   second: the second before the trigger counts (the ramp), and the
//!   shard's [`Peek`]s at the triggered host's details in the second so
//!   far stand in for the second until its snapshot arrives. An incident
//!   is `unclassified` until the evidence names a family;
//! - it **ends** after `hold_down` below every threshold; a crossing before
//!   then continues it.
//!
//! Like the shards, the detector takes its time from its input, so `run`
//! and `replay` share it. It does no I/O: events come out of
//! [`Detector::take_events`] for the caller to store, alert on, print.

pub mod baseline;
pub mod classify;
pub mod prefix;
mod timeline;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use levee_collectors::Addr;
use serde::Serialize;

use crate::accounting::{class, tcpkind, Counters, Details, HostSecond, Peek, Trigger};
use crate::config::{Config, Thresholds};
use crate::hostgroups::GroupId;
use baseline::{Baseline, Params};
use classify::{classify, Verdict};
pub use timeline::Timeline;

/// What made a host's second an attack second.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    /// `pps`, `bps`, `flows`, `tcp_syn_pps`, …
    pub metric: String,
    /// The estimate: the average over `window_s` seconds.
    pub value: u64,
    pub limit: u64,
    /// `static` (the hostgroup's threshold) or `baseline`.
    pub kind: &'static str,
    /// The seconds the estimate is over (1, or more when samples are
    /// sparse), and the packets really seen behind it (0: not counted).
    pub window_s: u64,
    pub samples: u64,
}

/// The windows a host's estimate is judged over, seconds: the shortest
/// whose samples show it over a limit beyond their noise.
pub const WINDOWS: [u64; 10] = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32];
/// Hosts whose recent seconds are kept at most.
const MAX_NEAR: usize = 65_536;

/// The last seconds of a host whose estimates came near a limit.
#[derive(Debug, Default)]
struct Near {
    seconds: VecDeque<(u64, Counters)>,
    last_near: u64,
}

/// One second of an incident.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Point {
    pub second: u64,
    pub pps: u64,
    pub bps: u64,
    /// Inbound TCP packets that are not bare SYNs: the host's established
    /// sessions (and any non-SYN TCP attack).
    pub est_tcp: u64,
    /// Packets really seen behind `pps` (sampled); 0 when not counted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub samples: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A port and its share of the attack's packets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortShare {
    pub port: u16,
    pub share: f64,
}

/// What a FlowSpec rule would be built from (MIT-2).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Features {
    /// IP protocols carrying at least 10% of the packets.
    pub protocols: Vec<u8>,
    /// Source and destination ports carrying at least 10% of the packets.
    pub src_ports: Vec<u16>,
    pub dst_ports: Vec<u16>,
    /// IP packet length range seen.
    pub packet_length: [u32; 2],
    /// TCP flag combinations carrying at least 10% of TCP packets.
    pub tcp_flags: Vec<&'static str>,
    /// Non-first fragments make up at least 10% of the packets.
    pub fragments: bool,
    /// ICMP types carrying at least 10% of the ICMP packets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub icmp_types: Vec<u8>,
}

/// Seconds of an attack a rule is built from.
pub const RECENT_SECONDS: usize = 5;
/// One-packet records needed before their lengths make a feature.
const MIN_SIZED: u64 = 20;

/// The attack as its last seconds show it: what mitigation builds rules
/// from and holds them against.
#[derive(Debug, Clone)]
pub struct Current {
    pub verdict: Verdict,
    pub features: Features,
    /// The details of the last [`RECENT_SECONDS`] seconds (and of the
    /// second so far), merged; shared, so a clone of the incident is cheap.
    pub details: Arc<Details>,
}

impl Default for Current {
    fn default() -> Self {
        Current {
            verdict: Verdict::none(),
            features: Features::default(),
            details: Arc::default(),
        }
    }
}

/// An incident: an attack on one host, from detection to its end.
#[derive(Debug, Clone)]
pub struct Incident {
    pub id: String,
    pub host: Addr,
    pub hostgroup: String,
    pub group: GroupId,
    /// First second over a threshold (Unix ms).
    pub started_ms: u64,
    /// When levee decided (Unix ms).
    pub detected_ms: u64,
    /// End of the last second over a threshold (Unix ms).
    pub last_over_ms: u64,
    /// Set when the incident has ended (hold-down passed, or input ended).
    pub ended: bool,
    pub peak_pps: u64,
    pub peak_bps: u64,
    pub reason: Reason,
    pub verdict: Verdict,
    pub severity: &'static str,
    pub features: Features,
    pub top_src_ports: Vec<PortShare>,
    pub top_dst_ports: Vec<PortShare>,
    /// The dominant IP protocol's name.
    pub protocol: String,
    pub timeline: Timeline,
    pub details: Details,
    /// The attack now: its last seconds.
    pub current: Current,
    /// The host's legitimate traffic before the attack.
    pub legit: Legit,
    /// For an attack spread over a prefix (DET-6): the prefix, whose
    /// network address is then `host`; none for one host's incident.
    pub prefix: Option<ipnet::IpNet>,
    /// Prefix incidents: the most destinations of the prefix hit in one
    /// second, and the busiest of them with their share of its packets.
    pub hosts_affected: u64,
    pub top_hosts: Vec<HostShare>,
    /// The incidents of the hosts inside a prefix incident, or of the
    /// prefix around a host's, that ran at the same time.
    pub linked: Vec<String>,
}

impl Incident {
    /// `"host"` or `"prefix"`.
    pub fn scope(&self) -> &'static str {
        if self.prefix.is_some() {
            "prefix"
        } else {
            "host"
        }
    }

    /// What is attacked: the host's address, or the prefix.
    pub fn target(&self) -> ipnet::IpNet {
        self.prefix
            .unwrap_or_else(|| ipnet::IpNet::from(self.host.ip()))
    }
}

/// A destination of a prefix incident and its share of the prefix's
/// packets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostShare {
    pub host: String,
    pub share: f64,
}

/// What happened, for the caller.
#[derive(Debug, Clone)]
pub enum Event {
    Started(Box<Incident>),
    Updated(Box<Incident>),
    Ended(Box<Incident>),
}

/// Detection settings, from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub thresholds: Vec<Thresholds>,
    pub groups: Vec<String>,
    pub trigger_seconds: u32,
    pub hold_down_s: u64,
    pub botnet_sources: u64,
    pub baseline: Option<Params>,
    pub max_hosts: usize,
    /// Seconds without traffic after which a host's state is forgotten
    /// (as the shards forget it).
    pub idle_s: u64,
    /// Seconds of history before a host's legitimate-traffic profile is
    /// judged by.
    pub legit_learning_s: u32,
    /// Per hostgroup, its prefix aggregates (DET-6), if it has them.
    pub prefixes: Vec<Option<prefix::PrefixSettings>>,
}

impl Settings {
    pub fn from_config(c: &Config) -> Settings {
        let b = &c.detection.baseline;
        Settings {
            thresholds: c.hostgroups.iter().map(|g| g.thresholds.clone()).collect(),
            groups: c.hostgroups.iter().map(|g| g.name.clone()).collect(),
            trigger_seconds: c.detection.trigger_seconds,
            hold_down_s: c.detection.hold_down.as_secs().max(1),
            botnet_sources: c.detection.botnet_sources,
            baseline: b.enabled.then(|| Params {
                alpha: 1.0 / b.window.as_secs_f64().max(1.0),
                long_alpha: 1.0
                    / b.ceiling_window
                        .as_secs_f64()
                        .max(b.window.as_secs_f64())
                        .max(1.0),
                learning_s: b.learning.as_secs(),
                sigma: b.sigma,
                floor_pps: b.floor_pps as f64,
                floor_bps: b.floor_bps as f64,
            }),
            max_hosts: c.detection.max_hosts,
            idle_s: c.detection.host_idle.as_secs().max(1),
            legit_learning_s: u32::try_from(c.detection.legit_learning.as_secs())
                .unwrap_or(u32::MAX),
            prefixes: c
                .hostgroups
                .iter()
                .map(|g| {
                    g.prefix_thresholds
                        .as_ref()
                        .map(|p| prefix::PrefixSettings {
                            len_v4: p.prefix_length_v4,
                            len_v6: p.prefix_length_v6,
                            limits: p.limits.clone(),
                            networks: g.prefixes.clone(),
                        })
                })
                .collect(),
        }
    }
}

#[derive(Debug, Default)]
struct HostState {
    baseline: Baseline,
    /// Consecutive seconds over a threshold, while no incident runs.
    over: u32,
    legit: Legit,
    /// The last second the host had traffic (for forgetting idle hosts).
    seen: u64,
}

/// What is saved of a host across restarts: its baseline and its
/// legitimate-traffic profile (a restart relearns neither).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    #[serde(flatten)]
    pub baseline: Baseline,
    #[serde(default)]
    pub legit: Option<SavedLegit>,
}

/// A [`Legit`] as saved.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedLegit {
    pub pps: [f32; class::COUNT],
    pub second: u64,
    pub seconds: u32,
}

/// Hosts without state of their own that are over a threshold, counted at
/// most (when the state table is full of busier hosts).
const MAX_STATELESS_OVER: usize = 65_536;
/// Learns from a second over no limit (of a host or a prefix): the
/// legitimate-traffic profile only below half the pps limit (nearer, it
/// may be an attack's ramp), the baseline from every such second.
fn learn_quiet(
    legit: &mut Legit,
    baseline: &mut Baseline,
    second: u64,
    counters: &Counters,
    pps_limit: Option<u64>,
    params: Option<&Params>,
) {
    let pps = u64::from(counters.packets[class::ALL]);
    let bps = counters.bytes.saturating_mul(8);
    if pps < pps_limit.map_or(u64::MAX, |p| p / 2) {
        legit.feed(second, counters);
    } else {
        legit.skip(second);
    }
    if let Some(p) = params {
        baseline.feed(second, pps as f64, bps as f64, p);
    }
}

/// How often idle hosts' state is swept (seconds).
const SWEEP_EVERY_S: u64 = 10;

/// A host's legitimate traffic: inbound packets per second by class, an
/// exponentially weighted mean over about two minutes of the seconds
/// outside incidents (idle seconds count as zeros). Mitigation estimates
/// from it what share of the host's legitimate packets a rule would match
/// (MIT-11), and whether a rule cut the host's sessions (MIT-7).
///
/// An attack's first seconds, before it crosses a threshold, must not
/// become the host's "normal": seconds at half the hostgroup's pps
/// threshold or more are not fed, and a profile counts only once it has
/// `legit_learning` seconds behind it (until then it is `learnt: false`
/// and mitigation does not judge by it). The mean is bias-corrected, so a
/// young profile is the average of its seconds, not pulled towards zero.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Legit {
    pub pps: [f32; class::COUNT],
    /// The last second fed (Unix seconds); 0 before the first.
    pub second: u64,
    /// Seconds fed.
    pub seconds: u32,
    /// Whether enough seconds were fed to judge by (set in snapshots).
    pub learnt: bool,
}

impl Legit {
    /// Weight of one second.
    const ALPHA: f32 = 1.0 / 120.0;

    fn feed(&mut self, second: u64, c: &crate::accounting::Counters) {
        let gap = if self.second == 0 {
            1
        } else {
            second.saturating_sub(self.second).clamp(1, 100_000) as i32
        };
        let keep = (1.0 - Self::ALPHA).powi(gap);
        for (m, p) in self.pps.iter_mut().zip(c.packets) {
            *m = *m * keep + Self::ALPHA * p as f32;
        }
        self.second = second;
        self.seconds = self.seconds.saturating_add(1);
    }

    /// A second that is not the host's normal — busy towards a threshold,
    /// or part of an attack: it feeds nothing, and it is not idle either
    /// (counting it as a zero would decay the profile, and with it the
    /// reference rollback and the collateral estimate judge by, to nothing
    /// over a long attack). The idle seconds before it still count.
    fn skip(&mut self, second: u64) {
        if self.seconds == 0 || second <= self.second {
            return;
        }
        let idle = (second - self.second - 1).min(100_000) as i32;
        let keep = (1.0 - Self::ALPHA).powi(idle);
        for m in &mut self.pps {
            *m *= keep;
        }
        self.second = second;
    }

    /// The profile as of `second` (the seconds since the last one fed
    /// count as idle), bias-corrected, and `learnt` once `learning`
    /// seconds were fed.
    pub fn at(&self, second: u64, learning: u32) -> Legit {
        let mut l = *self;
        if self.seconds == 0 {
            return l;
        }
        // Weight the fed seconds carry in the mean: 1 - (1-α)^n.
        let weight = 1.0 - (1.0 - Self::ALPHA).powi(self.seconds.min(100_000) as i32);
        let gap = second
            .saturating_sub(self.second)
            .saturating_sub(1)
            .min(100_000) as i32;
        let keep = (1.0 - Self::ALPHA).powi(gap);
        for m in &mut l.pps {
            *m = *m * keep / weight.max(f32::MIN_POSITIVE);
        }
        l.learnt = self.seconds >= learning;
        l
    }
}

/// An incident's recent evidence, kept beside it (not in it: incidents
/// are cloned every second, these are not).
#[derive(Debug, Default)]
struct Window {
    /// The last [`RECENT_SECONDS`] seconds' details, oldest first.
    seconds: VecDeque<(u64, Box<Details>)>,
    /// The second in progress so far (from a peek), until its snapshot.
    partial: Option<(u64, Box<Details>)>,
}

impl Window {
    fn push(&mut self, second: u64, d: Box<Details>) {
        if self.partial.as_ref().is_some_and(|(s, _)| *s <= second) {
            self.partial = None;
        }
        self.seconds.push_back((second, d));
        while self.seconds.len() > RECENT_SECONDS {
            self.seconds.pop_front();
        }
    }

    /// The latest second a snapshot brought.
    fn last_second(&self) -> Option<u64> {
        self.seconds.back().map(|(s, _)| *s)
    }

    fn merged(&self) -> Details {
        let mut d = Details::default();
        for (_, s) in &self.seconds {
            d.merge(s);
        }
        if let Some((_, p)) = &self.partial {
            d.merge(p);
        }
        d
    }
}

/// The detector: baselines, incidents, classification.
pub struct Detector {
    s: Settings,
    hosts: HashMap<Addr, HostState>,
    active: HashMap<Addr, Incident>,
    windows: HashMap<Addr, Window>,
    /// Last second's details of the hosts that had some and no incident:
    /// the ramp of an attack that crosses a threshold in the next second.
    last: HashMap<Addr, (u64, Box<Details>)>,
    /// Consecutive seconds over a threshold of hosts that have no state
    /// (the table is full): static thresholds hold for every host.
    stateless_over: HashMap<Addr, u32>,
    /// The last seconds of hosts near a limit (see [`WINDOWS`]).
    recent: HashMap<Addr, Near>,
    last_sweep: u64,
    events: Vec<Event>,
    seq: u64,
    /// The latest second judged.
    latest: u64,
    /// Hosts whose baseline was refused because `max_hosts` was reached.
    pub refused: u64,
    /// Prefix aggregates and their incidents.
    pfx: prefix::Prefixes,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("active", &self.active.len())
            .finish()
    }
}

impl Detector {
    pub fn new(s: Settings) -> Detector {
        Detector {
            s,
            hosts: HashMap::new(),
            active: HashMap::new(),
            windows: HashMap::new(),
            last: HashMap::new(),
            stateless_over: HashMap::new(),
            recent: HashMap::new(),
            last_sweep: 0,
            events: Vec::new(),
            seq: 0,
            latest: 0,
            refused: 0,
            pfx: prefix::Prefixes::default(),
        }
    }

    /// A host's legitimate-traffic profile as mitigation would judge by it
    /// now: the one its running incident carries, else the one being
    /// learnt (as of the latest second judged). `None` for a host the
    /// detector does not track.
    pub fn legit(&self, host: &Addr) -> Option<Legit> {
        if let Some(inc) = self.active.get(host) {
            return Some(inc.legit);
        }
        let h = self.hosts.get(host)?;
        Some(h.legit.at(self.latest, self.s.legit_learning_s))
    }

    pub fn reconfigure(&mut self, s: Settings) {
        self.s = s;
    }

    /// The incidents running: hosts', then prefixes'.
    pub fn active(&self) -> impl Iterator<Item = &Incident> {
        self.active.values().chain(self.pfx.active.values())
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// What to save of each host with some history (DET-2, MIT-11: a
    /// restart relearns neither its baseline nor its normal traffic).
    pub fn saved(&self) -> impl Iterator<Item = (&Addr, Saved)> {
        self.hosts
            .iter()
            .filter(|(_, h)| h.baseline.seconds > 0 || h.legit.seconds > 0)
            .map(|(a, h)| {
                (
                    a,
                    Saved {
                        baseline: h.baseline,
                        legit: (h.legit.seconds > 0).then_some(SavedLegit {
                            pps: h.legit.pps,
                            second: h.legit.second,
                            seconds: h.legit.seconds,
                        }),
                    },
                )
            })
    }

    /// Takes back what was saved of hosts before a restart: the most
    /// recently seen first, and only up to three quarters of `max_hosts`
    /// (a spray of addresses saved before the restart must not fill the
    /// table for good).
    pub fn restore(&mut self, mut saved: Vec<(Addr, Saved)>) -> usize {
        let recent = |s: &Saved| s.baseline.last.max(s.legit.map_or(0, |l| l.second));
        saved.sort_by_key(|(_, s)| std::cmp::Reverse(recent(s)));
        let room = (self.s.max_hosts / 4 * 3).saturating_sub(self.hosts.len());
        let mut n = 0;
        for (addr, s) in saved.into_iter().take(room) {
            let h = self.hosts.entry(addr).or_default();
            h.baseline = s.baseline;
            if let Some(l) = s.legit {
                h.legit.pps = l.pps;
                h.legit.second = l.second;
                h.legit.seconds = l.seconds;
            }
            h.seen = recent(&s);
            n += 1;
        }
        n
    }

    /// Hosts with state (baselines, profiles).
    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Forgets the state of hosts idle past `idle_s` (swept every few
    /// seconds; hosts under attack are kept).
    fn sweep(&mut self, second: u64) {
        if second < self.last_sweep + SWEEP_EVERY_S {
            return;
        }
        self.last_sweep = second;
        let idle = self.s.idle_s;
        let active = &self.active;
        self.hosts
            .retain(|a, h| h.seen + idle >= second || active.contains_key(a));
        let window = WINDOWS[WINDOWS.len() - 1];
        self.recent.retain(|_, r| r.last_near + window > second);
    }

    fn new_id(&mut self, at_ms: u64) -> String {
        self.seq += 1;
        format!("{at_ms:013x}{:03x}", self.seq & 0xfff)
    }

    /// A new incident of `host` (or of `prefix`, whose network address
    /// `host` then is), before anything is known of it but why it began.
    #[allow(clippy::too_many_arguments)]
    fn fresh_incident(
        &mut self,
        host: Addr,
        group: GroupId,
        prefix: Option<ipnet::IpNet>,
        started_ms: u64,
        detected_ms: u64,
        reason: Reason,
        legit: Legit,
    ) -> Incident {
        Incident {
            id: self.new_id(started_ms),
            host,
            hostgroup: self
                .s
                .groups
                .get(usize::from(group))
                .cloned()
                .unwrap_or_default(),
            group,
            started_ms,
            detected_ms,
            last_over_ms: detected_ms,
            ended: false,
            peak_pps: 0,
            peak_bps: 0,
            reason,
            verdict: Verdict::none(),
            severity: "low",
            features: Features::default(),
            top_src_ports: Vec::new(),
            top_dst_ports: Vec::new(),
            protocol: String::new(),
            timeline: Timeline::default(),
            details: Details::default(),
            current: Current::default(),
            legit: legit.at(started_ms / 1000, self.s.legit_learning_s),
            prefix,
            hosts_affected: 0,
            top_hosts: Vec::new(),
            linked: Vec::new(),
        }
    }

    fn start(
        &mut self,
        host: Addr,
        group: GroupId,
        started_ms: u64,
        detected_ms: u64,
        reason: Reason,
        legit: Legit,
    ) {
        let inc = self.fresh_incident(host, group, None, started_ms, detected_ms, reason, legit);
        let mut window = Window::default();
        // The second before: the attack's ramp, the evidence there is.
        if let Some((second, d)) = self.last.remove(&host) {
            if second + 1 >= started_ms / 1000 {
                window.push(second, d);
            }
        }
        let mut inc = inc;
        for (_, d) in &window.seconds {
            inc.details.merge(d);
        }
        let limits = self
            .s
            .thresholds
            .get(usize::from(group))
            .cloned()
            .unwrap_or_default();
        refresh(&mut inc, &window, self.s.botnet_sources, &limits);
        self.events.push(Event::Started(Box::new(inc.clone())));
        self.active.insert(host, inc);
        self.windows.insert(host, window);
    }

    /// The second an incident started in (per second, not by a trigger):
    /// its first point and its details.
    fn first_second(&mut self, h: &HostSecond, second: u64, this: Option<Box<Details>>) {
        let (Some(inc), Some(window)) =
            (self.active.get_mut(&h.addr), self.windows.get_mut(&h.addr))
        else {
            return;
        };
        let (pps, bps) = (
            u64::from(h.inbound.packets[class::ALL]),
            h.inbound.bytes * 8,
        );
        inc.timeline.push(Point {
            second,
            pps,
            bps,
            est_tcp: u64::from(
                h.inbound.packets[class::TCP].saturating_sub(h.inbound.packets[class::TCP_SYN]),
            ),
            samples: u64::from(h.inbound.samples),
        });
        inc.peak_pps = pps;
        inc.peak_bps = bps;
        let d = this.unwrap_or_else(|| Box::new(Details::from_counters(&h.inbound)));
        inc.details.merge(&d);
        window.push(second, d);
        let limits = self
            .s
            .thresholds
            .get(usize::from(h.group))
            .cloned()
            .unwrap_or_default();
        refresh(inc, window, self.s.botnet_sources, &limits);
    }

    /// A look at a triggered host's details before its second ends: the
    /// incident is classified again from it, and reported when that
    /// changes what a rule would be built from.
    pub fn on_peek(&mut self, p: Peek) {
        let (Some(inc), Some(window)) =
            (self.active.get_mut(&p.addr), self.windows.get_mut(&p.addr))
        else {
            return;
        };
        if window.last_second().is_some_and(|s| s >= p.second) {
            return; // the snapshot of that second came first
        }
        window.partial = Some((p.second, p.details));
        let before = rule_basis(&inc.current);
        let limits = self
            .s
            .thresholds
            .get(usize::from(inc.group))
            .cloned()
            .unwrap_or_default();
        refresh(inc, window, self.s.botnet_sources, &limits);
        if rule_basis(&inc.current) != before {
            self.events.push(Event::Updated(Box::new(inc.clone())));
        }
    }

    /// A static threshold was crossed on the sliding window.
    pub fn on_trigger(&mut self, t: &Trigger) {
        if self.s.trigger_seconds > 1 {
            return; // sustained crossings are judged per second
        }
        if let Some(inc) = self.active.get_mut(&t.addr) {
            inc.last_over_ms = inc.last_over_ms.max(t.at_ms);
            return;
        }
        let limits = self
            .s
            .thresholds
            .get(usize::from(t.group))
            .cloned()
            .unwrap_or_default();
        let reason = match (limits.pps, limits.bps) {
            (Some(p), _) if t.pps > p => Reason {
                metric: "pps".into(),
                value: t.pps,
                limit: p,
                kind: "static",
                window_s: 1,
                samples: t.samples,
            },
            (_, Some(b)) => Reason {
                metric: "bps".into(),
                value: t.bps,
                limit: b,
                kind: "static",
                window_s: 1,
                samples: t.samples,
            },
            _ => return,
        };
        let legit = self.hosts.get(&t.addr).map(|h| h.legit).unwrap_or_default();
        self.start(t.addr, t.group, t.at_ms, t.at_ms, reason, legit);
    }

    /// What is over for a host, if anything (see [`judge`]).
    fn check(
        &self,
        h: &HostSecond,
        history: &[(u64, Counters)],
        base: Option<&Baseline>,
    ) -> Option<Reason> {
        let t = self.s.thresholds.get(usize::from(h.group))?;
        let baseline = base
            .zip(self.s.baseline.as_ref())
            .and_then(|(b, p)| b.limits(p));
        judge(t, history, baseline)
    }

    /// Whether any estimate of this second, noise or not, is over a limit:
    /// the host's seconds are then kept, to judge over a longer window.
    fn near(&self, h: &HostSecond, base: Option<&Baseline>) -> bool {
        let Some(t) = self.s.thresholds.get(usize::from(h.group)) else {
            return false;
        };
        let baseline = base
            .zip(self.s.baseline.as_ref())
            .and_then(|(b, p)| b.limits(p));
        near(t, &h.inbound, baseline)
    }

    /// The hosts of second `second` (from every shard).
    pub fn on_second(&mut self, second: u64, hosts: Vec<HostSecond>) {
        let end_ms = (second + 1) * 1000;
        self.latest = self.latest.max(second);
        let mut last = HashMap::new();
        // Hosts of hostgroups with prefix aggregates: those with an
        // incident of their own are taken out of their prefix's second.
        let mut in_prefixes = Vec::new();
        for mut h in hosts {
            if let Some(key) = self.prefix_key(&h.addr, h.group) {
                in_prefixes.push((h.addr, key, h.inbound));
            }
            let base = self.hosts.get(&h.addr).map(|s| &s.baseline);
            // A host whose estimates come near a limit keeps its last
            // seconds, so sparse samples are judged over a longer window.
            let near = self.near(&h, base);
            let over = if near || self.recent.contains_key(&h.addr) {
                if !self.recent.contains_key(&h.addr) && self.recent.len() >= MAX_NEAR {
                    self.recent.clear(); // far more hosts near a limit than any attack makes
                }
                let r = self.recent.entry(h.addr).or_default();
                r.seconds.push_back((second, h.inbound));
                while r
                    .seconds
                    .front()
                    .is_some_and(|(s, _)| *s + WINDOWS[WINDOWS.len() - 1] <= second)
                {
                    r.seconds.pop_front();
                }
                if near {
                    r.last_near = second;
                }
                let history: Vec<(u64, Counters)> = r.seconds.iter().copied().collect();
                let base = self.hosts.get(&h.addr).map(|s| &s.baseline);
                self.check(&h, &history, base)
            } else {
                None
            };
            let pps = u64::from(h.inbound.packets[class::ALL]);
            let bps = h.inbound.bytes * 8;
            let est_tcp = u64::from(
                h.inbound.packets[class::TCP].saturating_sub(h.inbound.packets[class::TCP_SYN]),
            );

            if let Some(state) = self.hosts.get_mut(&h.addr) {
                state.seen = second;
                if self.active.contains_key(&h.addr) {
                    state.legit.skip(second);
                }
            }
            if let Some(inc) = self.active.get_mut(&h.addr) {
                // An incident runs: every second it is in the timeline.
                inc.timeline.push(Point {
                    second,
                    pps,
                    bps,
                    est_tcp,
                    samples: u64::from(h.inbound.samples),
                });
                let d = second_details(&mut h);
                inc.details.merge(&d);
                let window = self.windows.entry(h.addr).or_default();
                window.push(second, d);
                if over.is_some() {
                    inc.last_over_ms = inc.last_over_ms.max(end_ms);
                    inc.peak_pps = inc.peak_pps.max(pps);
                    inc.peak_bps = inc.peak_bps.max(bps);
                }
                let id = h.addr;
                let limits = self
                    .s
                    .thresholds
                    .get(usize::from(inc.group))
                    .cloned()
                    .unwrap_or_default();
                refresh(inc, window, self.s.botnet_sources, &limits);
                self.events
                    .push(Event::Updated(Box::new(self.active[&id].clone())));
                continue;
            }
            if let Some(d) = h.details.take() {
                last.insert(h.addr, (second, d));
            }

            let is_new = !self.hosts.contains_key(&h.addr);
            if is_new && self.hosts.len() >= self.s.max_hosts {
                // No room for state: no baseline, no profile — but the
                // static thresholds hold for every host.
                self.refused += 1;
                let Some(reason) = over else {
                    self.stateless_over.remove(&h.addr);
                    continue;
                };
                if self.stateless_over.len() >= MAX_STATELESS_OVER
                    && !self.stateless_over.contains_key(&h.addr)
                {
                    self.stateless_over.clear();
                }
                let n = self.stateless_over.entry(h.addr).or_default();
                *n += 1;
                if *n < self.s.trigger_seconds {
                    continue;
                }
                let started = (second + 1 - u64::from(*n)) * 1000;
                self.stateless_over.remove(&h.addr);
                let this = last.remove(&h.addr).map(|(_, d)| d);
                self.start(h.addr, h.group, started, end_ms, reason, Legit::default());
                self.first_second(&h, second, this);
                continue;
            }
            let state = self.hosts.entry(h.addr).or_default();
            state.seen = second;
            match over {
                Some(reason) => {
                    state.legit.skip(second);
                    state.over += 1;
                    if state.over >= self.s.trigger_seconds {
                        let started = (second + 1 - u64::from(state.over)) * 1000;
                        state.over = 0;
                        let legit = state.legit;
                        // This second is the incident's, not its ramp.
                        let this = last.remove(&h.addr).map(|(_, d)| d);
                        self.start(h.addr, h.group, started, end_ms, reason, legit);
                        self.first_second(&h, second, this);
                    }
                }
                None => {
                    state.over = 0;
                    let limit = self
                        .s
                        .thresholds
                        .get(usize::from(h.group))
                        .and_then(|t| t.pps);
                    learn_quiet(
                        &mut state.legit,
                        &mut state.baseline,
                        second,
                        &h.inbound,
                        limit,
                        self.s.baseline.as_ref(),
                    );
                }
            }
        }
        // Incidents whose host stayed quiet long enough end.
        let hold = self.s.hold_down_s * 1000;
        let ended: Vec<Addr> = self
            .active
            .iter()
            .filter(|(_, inc)| inc.last_over_ms + hold <= end_ms)
            .map(|(a, _)| *a)
            .collect();
        self.sweep(second);
        for a in ended {
            self.windows.remove(&a);
            if let Some(mut inc) = self.active.remove(&a) {
                inc.ended = true;
                self.events.push(Event::Ended(Box::new(inc)));
            }
        }
        self.last = last;
        for (addr, key, inbound) in in_prefixes {
            if self.active.contains_key(&addr) {
                let e = self.pfx.excluded.entry(key).or_default();
                crate::accounting::add_counters(&mut e.0, &inbound);
                e.1 += 1;
                self.link_host(addr);
            }
        }
    }

    /// The input ended (replay): every incident ends as it stands.
    pub fn finish(&mut self) {
        self.windows.clear();
        let mut all: Vec<Incident> = self
            .active
            .drain()
            .map(|(_, i)| i)
            .chain(self.pfx.active.drain().map(|(_, i)| i))
            .collect();
        all.sort_by_key(|i| i.started_ms);
        for mut inc in all {
            inc.ended = true;
            self.events.push(Event::Ended(Box::new(inc)));
        }
    }
}

/// What is over, if anything: the first static threshold of `t`, else the
/// baseline's limits (pps, bps), whose estimate clears the limit by more
/// than its sampling noise — over the last second, or, when that is too
/// few samples to tell (sparse sampling), over the last 2, 3, 4 … 32
/// seconds ([`WINDOWS`]; `history` newest last, the last is this second).
fn judge(
    t: &Thresholds,
    history: &[(u64, Counters)],
    baseline: Option<(f64, f64)>,
) -> Option<Reason> {
    let second = history.last().map_or(0, |(s, _)| *s);
    type Get = fn(&Counters) -> u64;
    let checks: [(&str, Get, Option<u64>, &'static str); 8] = [
        ("pps", |c| u64::from(c.packets[class::ALL]), t.pps, "static"),
        ("bps", |c| c.bytes * 8, t.bps, "static"),
        ("flows", |c| u64::from(c.flows), t.flows, "static"),
        (
            "tcp_pps",
            |c| u64::from(c.packets[class::TCP]),
            t.tcp_pps,
            "static",
        ),
        (
            "tcp_syn_pps",
            |c| u64::from(c.packets[class::TCP_SYN]),
            t.tcp_syn_pps,
            "static",
        ),
        (
            "udp_pps",
            |c| u64::from(c.packets[class::UDP]),
            t.udp_pps,
            "static",
        ),
        (
            "icmp_pps",
            |c| u64::from(c.packets[class::ICMP]),
            t.icmp_pps,
            "static",
        ),
        (
            "fragment_pps",
            |c| u64::from(c.packets[class::FRAGMENT]),
            t.fragment_pps,
            "static",
        ),
    ];
    let dynamic: [(&str, Get, Option<u64>, &'static str); 2] = [
        (
            "pps",
            |c| u64::from(c.packets[class::ALL]),
            baseline.map(|l| l.0 as u64),
            "baseline",
        ),
        (
            "bps",
            |c| c.bytes * 8,
            baseline.map(|l| l.1 as u64),
            "baseline",
        ),
    ];
    for (metric, get, limit, kind) in checks.into_iter().chain(dynamic) {
        let Some(limit) = limit else { continue };
        for w in WINDOWS {
            let mut n = 0usize;
            let (mut v, mut all, mut samples) = (0u64, 0u64, 0u64);
            for (_, c) in history.iter().rev().take_while(|(s, _)| *s + w > second) {
                n += 1;
                v += get(c);
                all += u64::from(c.packets[class::ALL]);
                // Without a count of what was seen, the counts are exact.
                samples += if c.samples == 0 {
                    u64::from(c.packets[class::ALL])
                } else {
                    u64::from(c.samples)
                };
            }
            if w > 1 && n <= 1 {
                break; // no more seconds to widen to
            }
            let value = v / w;
            if value <= limit {
                continue;
            }
            // The samples behind this metric: its share of all of them
            // (flows are records, counted exactly).
            let (seen, per) = if metric == "flows" {
                (v as f64, 1.0)
            } else {
                let share = if metric == "bps" {
                    1.0
                } else {
                    v as f64 / all.max(1) as f64
                };
                (samples as f64 * share, all as f64 / samples.max(1) as f64)
            };
            if crate::accounting::significant(value as f64, seen, per, limit as f64) {
                return Some(Reason {
                    metric: metric.into(),
                    value,
                    limit,
                    kind,
                    window_s: w,
                    samples: seen as u64,
                });
            }
        }
    }
    None
}

/// Whether any estimate of a second, noise or not, is over a limit of `t`
/// or of the baseline's.
fn near(t: &Thresholds, c: &Counters, baseline: Option<(f64, f64)>) -> bool {
    let over = |v: u64, l: Option<u64>| l.is_some_and(|l| v > l);
    over(u64::from(c.packets[class::ALL]), t.pps)
        || over(c.bytes * 8, t.bps)
        || over(u64::from(c.flows), t.flows)
        || over(u64::from(c.packets[class::TCP]), t.tcp_pps)
        || over(u64::from(c.packets[class::TCP_SYN]), t.tcp_syn_pps)
        || over(u64::from(c.packets[class::UDP]), t.udp_pps)
        || over(u64::from(c.packets[class::ICMP]), t.icmp_pps)
        || over(u64::from(c.packets[class::FRAGMENT]), t.fragment_pps)
        || baseline
            .is_some_and(|(p, b)| f64::from(c.packets[class::ALL]) > p || (c.bytes * 8) as f64 > b)
}

/// A host's second as details: its own when it had them, else what its
/// counters say.
fn second_details(h: &mut HostSecond) -> Box<Details> {
    h.details
        .take()
        .unwrap_or_else(|| Box::new(Details::from_counters(&h.inbound)))
}

/// What a rule is built from: when this changes, mitigation must look
/// again (a peek reports only such changes).
#[derive(Debug, PartialEq)]
struct RuleBasis {
    family: String,
    vector: Option<String>,
    parts: Vec<(classify::Family, Option<String>)>,
    features: Features,
}

fn rule_basis(c: &Current) -> RuleBasis {
    RuleBasis {
        family: c.verdict.family.clone(),
        vector: c.verdict.vector.clone(),
        parts: c
            .verdict
            .parts
            .iter()
            .map(|p| (p.family, p.vector.clone()))
            .collect(),
        features: c.features.clone(),
    }
}

/// What an incident shows, derived from details: the dominant protocol's
/// name, the top ports, and the features a rule is built from.
fn describe(d: &Details, v4: bool) -> (String, Vec<PortShare>, Vec<PortShare>, Features) {
    let total = d.packets.max(1) as f64;
    let shares = |top: Vec<(u16, u64)>| -> Vec<PortShare> {
        top.into_iter()
            .take(5)
            .map(|(port, n)| PortShare {
                port,
                share: ((n as f64 / total) * 1000.0).round() / 1000.0,
            })
            .collect()
    };
    let proto_counts = [
        (6u8, d.classes[class::TCP]),
        (17, d.classes[class::UDP]),
        (if v4 { 1 } else { 58 }, d.classes[class::ICMP]),
    ];
    let mut protocols: Vec<(u8, u64)> = proto_counts.to_vec();
    protocols.extend(d.protocols.top());
    protocols.sort_by_key(|p| std::cmp::Reverse(p.1));
    let protocol = match protocols.first() {
        Some((p, n)) if *n > 0 => protocol_label(*p),
        _ if d.classes[class::FRAGMENT] > 0 => "fragment".into(),
        _ => String::new(),
    };
    let tcp_total: u64 = d.tcp.iter().sum();
    let features = Features {
        protocols: protocols
            .iter()
            .filter(|(_, n)| *n > 0 && *n as f64 >= 0.1 * total)
            .map(|(p, _)| *p)
            .collect(),
        src_ports: d
            .src_ports
            .top()
            .into_iter()
            .filter(|(_, n)| *n as f64 >= 0.1 * total)
            .map(|(p, _)| p)
            .collect(),
        dst_ports: d
            .dst_ports
            .top()
            .into_iter()
            .filter(|(_, n)| *n as f64 >= 0.1 * total)
            .map(|(p, _)| p)
            .collect(),
        // A range from a handful of packets would miss the lengths they
        // happened not to show.
        packet_length: if d.sized >= MIN_SIZED {
            [d.min_size, d.max_size]
        } else {
            [0, 0]
        },
        tcp_flags: (0..tcpkind::COUNT)
            .filter(|&k| tcp_total > 0 && d.tcp[k] as f64 >= 0.1 * tcp_total as f64)
            .map(|k| tcpkind::NAMES[k])
            .collect(),
        fragments: d.classes[class::FRAGMENT] as f64 >= 0.1 * total,
        icmp_types: {
            let top = d.icmp_types.top();
            let icmp: u64 = top.iter().map(|(_, n)| n).sum();
            top.into_iter()
                .filter(|(_, n)| icmp > 0 && *n as f64 >= 0.1 * icmp as f64)
                .map(|(t, _)| t)
                .collect()
        },
    };
    (
        protocol,
        shares(d.src_ports.top()),
        shares(d.dst_ports.top()),
        features,
    )
}

/// Classifies again and derives what the incident shows: over the whole
/// incident (and the second in progress), and over its recent seconds.
fn refresh(inc: &mut Incident, window: &Window, botnet_sources: u64, limits: &Thresholds) {
    let v4 = inc.host.is_v4_mapped();
    let whole = match &window.partial {
        Some((_, p)) => {
            let mut d = inc.details.clone();
            d.merge(p);
            std::borrow::Cow::Owned(d)
        }
        None => std::borrow::Cow::Borrowed(&inc.details),
    };
    if whole.records > 0 {
        inc.verdict = classify(&whole, botnet_sources);
        let (protocol, src, dst, features) = describe(&whole, v4);
        inc.protocol = protocol;
        inc.top_src_ports = src;
        inc.top_dst_ports = dst;
        inc.features = features;
    }
    let recent = window.merged();
    if recent.records > 0 {
        let verdict = classify(&recent, botnet_sources);
        let (_, _, _, features) = describe(&recent, v4);
        inc.current = Current {
            verdict,
            features,
            details: Arc::new(recent),
        };
    }
    // Severity: how far past the host's static limit the peak went.
    let ratio = match (limits.pps, limits.bps) {
        (Some(p), Some(b)) => (inc.peak_pps as f64 / p as f64).max(inc.peak_bps as f64 / b as f64),
        (Some(p), None) => inc.peak_pps as f64 / p as f64,
        (None, Some(b)) => inc.peak_bps as f64 / b as f64,
        (None, None) => inc.reason.value as f64 / inc.reason.limit.max(1) as f64,
    };
    inc.severity = match ratio {
        r if r >= 20.0 => "critical",
        r if r >= 5.0 => "high",
        r if r >= 2.0 => "medium",
        _ => "low",
    };
}

fn protocol_label(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        4 => "ipip".into(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests;
