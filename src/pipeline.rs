//! The path from records to incidents, as `run` and `replay` share it.
//!
//! [`Routing`] decides where a record is accounted: for its destination
//! when that is a protected host (inbound), for its source when that is one
//! (outbound), on the shard its address hashes to. [`Inline`] is the whole
//! path on one thread with a clock taken from its input — what `replay`
//! runs; `run` runs the same `Shard` and `Detector` on threads with rings
//! between them (`crate::dataplane`).

use std::collections::HashMap;
use std::sync::Arc;

use levee_collectors::{Addr, FlowRecord};

use crate::accounting::sketch::hash_addr;
use crate::accounting::{Bounds, Limit, Rec, Shard, Snapshot};
use crate::config::Config;
use crate::detect::{Detector, Event, Settings};
use crate::hostgroups::{GroupId, Hostgroups};

/// Which shard owns an address.
#[inline]
pub fn shard_of(a: &Addr, shards: usize) -> usize {
    // The hash scaled into [0, shards): a multiply, not a division.
    ((u128::from(hash_addr(a)) * shards as u128) >> 64) as usize
}

/// Where records go.
#[derive(Debug, Clone)]
pub struct Routing {
    pub groups: Arc<Hostgroups>,
    pub shards: usize,
}

impl Routing {
    /// Calls `f(shard, host, group, outbound)` for each protected end of `r`.
    #[inline]
    pub fn route(&self, r: &FlowRecord, mut f: impl FnMut(usize, Addr, GroupId, bool)) {
        if let Some(g) = self.groups.lookup(&r.dst) {
            f(shard_of(&r.dst, self.shards), r.dst, g, false);
        }
        if let Some(g) = self.groups.lookup(&r.src) {
            f(shard_of(&r.src, self.shards), r.src, g, true);
        }
    }
}

/// The static limits the shards check continuously, per hostgroup.
pub fn limits(c: &Config) -> Vec<Limit> {
    c.hostgroups
        .iter()
        .map(|g| Limit {
            pps: g.thresholds.pps,
            bps: g.thresholds.bps,
            prefix: g
                .prefix_thresholds
                .as_ref()
                .map(|p| crate::accounting::PrefixLimit {
                    len_v4: p.prefix_length_v4,
                    len_v6: p.prefix_length_v6,
                    pps: p.limits.pps,
                    bps: p.limits.bps,
                }),
        })
        .collect()
}

/// Shard bounds from the config, split over `shards`.
pub fn bounds(c: &Config, shards: usize) -> Bounds {
    let d = &c.detection;
    Bounds {
        max_hosts: (d.max_hosts / shards).max(1),
        idle_s: d.host_idle.as_secs().max(1),
        detail_pps: d.detail_pps,
        max_detailed: (d.max_detailed_hosts / shards).max(1),
    }
}

/// One second of every shard: its hosts and its prefix aggregates.
pub struct Merged {
    pub second: u64,
    pub hosts: Vec<crate::accounting::HostSecond>,
    pub prefixes: Vec<crate::accounting::PrefixSecond>,
}

/// Merges the shards' snapshots of one second.
pub fn merge(snaps: Vec<Snapshot>) -> Merged {
    let second = snaps.iter().map(|s| s.second).max().unwrap_or(0);
    let mut hosts = Vec::new();
    let mut prefixes = Vec::new();
    for s in snaps {
        hosts.extend(s.hosts);
        prefixes.extend(s.prefixes);
    }
    Merged {
        second,
        hosts,
        prefixes,
    }
}

/// Judges a merged second: its hosts, then its prefixes.
pub fn judge(detector: &mut Detector, m: Merged) {
    detector.on_second(m.second, m.hosts);
    detector.on_prefixes(m.second, m.prefixes);
}

/// Packets and bytes addressed to a host over a whole input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
}

/// The whole path on one thread, its clock taken from the input.
pub struct Inline {
    routing: Routing,
    shards: Vec<Shard>,
    detector: Detector,
    /// Per protected destination, when asked for.
    totals: Option<HashMap<Addr, Totals>>,
    now_ms: u64,
}

impl Inline {
    pub fn new(c: &Config, keep_totals: bool) -> Inline {
        let shards = 1;
        Inline {
            routing: Routing {
                groups: Arc::new(Hostgroups::new(&c.hostgroups)),
                shards,
            },
            shards: (0..shards)
                .map(|_| Shard::new(limits(c), bounds(c, shards)))
                .collect(),
            detector: Detector::new(Settings::from_config(c)),
            totals: keep_totals.then(HashMap::new),
            now_ms: 0,
        }
    }

    pub fn groups(&self) -> &Hostgroups {
        &self.routing.groups
    }

    /// Moves the clock to `now_ms`: ends the seconds it passes.
    pub fn advance(&mut self, now_ms: u64) {
        if now_ms < self.now_ms {
            return; // out-of-order input: its records count in the current second
        }
        self.now_ms = now_ms;
        let snaps: Vec<Snapshot> = self
            .shards
            .iter_mut()
            .filter_map(|s| s.advance(now_ms))
            .collect();
        if snaps.is_empty() {
            return;
        }
        let m = merge(snaps);
        let second = m.second;
        judge(&mut self.detector, m);
        // Seconds the input skipped: nothing happened in them, but time passed.
        let now_s = now_ms / 1000;
        if now_s > second + 1 {
            self.detector.on_second(now_s - 1, Vec::new());
            self.detector.on_prefixes(now_s - 1, Vec::new());
        }
    }

    /// Accounts records observed at the current time.
    pub fn feed(&mut self, records: &[FlowRecord]) {
        for r in records {
            let shards = &mut self.shards;
            let totals = &mut self.totals;
            self.routing.route(r, |i, host, group, outbound| {
                shards[i].account(&Rec::new(r, group, outbound));
                if !outbound {
                    if let Some(t) = totals {
                        let e = t.entry(host).or_default();
                        e.packets += r.packets;
                        e.bytes += r.bytes;
                    }
                }
            });
        }
        for (i, s) in self.shards.iter_mut().enumerate() {
            for t in s.take_triggers() {
                self.detector.on_trigger(&t);
            }
            for p in s.take_peeks() {
                self.detector.on_peek(p);
            }
            let looks = s.take_prefix_peeks();
            if !looks.is_empty() {
                self.detector.on_prefix_peeks(i, looks);
            }
        }
    }

    /// The input ended: the last second is judged and every incident ends.
    pub fn finish(&mut self) {
        let snaps: Vec<Snapshot> = self.shards.iter_mut().map(|s| s.flush()).collect();
        judge(&mut self.detector, merge(snaps));
        self.detector.finish();
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        self.detector.take_events()
    }

    pub fn totals(&self) -> Option<&HashMap<Addr, Totals>> {
        self.totals.as_ref()
    }
}
