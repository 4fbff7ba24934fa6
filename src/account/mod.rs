//! Accounting (ACC-1…3): per protected host, what each second brought.
//!
//! A [`Shard`] owns the hosts whose address hashes to it, outright: no lock
//! is taken per record. For each host it keeps the current second's
//! counters — inbound packets, bytes and flows by class (all, TCP, TCP SYN
//! without ACK, UDP, ICMP, non-first fragments, other protocols) and
//! outbound totals — a sliding one-second window (ten 100 ms slots) that is
//! checked against the static thresholds on every record, and exact totals
//! since it was first seen. Hosts busy enough to matter (the window above
//! `detail_pps`) also get [`Details`]: distinct sources (HyperLogLog), a TTL
//! histogram, top source/destination ports and sources (space-saving),
//! packet sizes, TCP flag combinations and other protocols — what
//! classification needs — from a bounded pool.
//!
//! Time is whatever the driver says (`advance`): the wall clock in `levee
//! run`, the capture clock in `levee replay`; the same code serves both.
//! When a second ends the shard hands out a [`Snapshot`] of the hosts that
//! had traffic in it; a window crossing a threshold is reported at once as a
//! [`Trigger`], so detection does not wait for the second to end.
//!
//! Bounded memory: at most `max_hosts` hosts (further ones are refused and
//! counted), idle ones evicted, at most `max_detailed` with details.
//!
//! A flow record that covers several seconds (flow export's long flows,
//! reported once per active timeout) adds its per-second rate, not its whole
//! count, to the second it arrives in: a long transfer reported every minute
//! is not a one-second burst of a minute's bytes.

pub mod sketch;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use levee_collectors::record::{flags, proto};
use levee_collectors::{Addr, FlowRecord};

use crate::hostgroups::GroupId;
use sketch::{hash_addr, Hll, SpaceSaving};

/// Traffic classes counted per host. A TCP SYN-only packet counts in both
/// `TCP` and `TCP_SYN`; everything counts in `ALL`.
pub mod class {
    pub const ALL: usize = 0;
    pub const TCP: usize = 1;
    pub const TCP_SYN: usize = 2;
    pub const UDP: usize = 3;
    pub const ICMP: usize = 4;
    /// Non-first IP fragments (no L4 header to say more).
    pub const FRAGMENT: usize = 5;
    pub const OTHER: usize = 6;
    pub const COUNT: usize = 7;
    pub const NAMES: [&str; COUNT] = ["all", "tcp", "tcp_syn", "udp", "icmp", "fragment", "other"];
}

/// The class of a record (besides `ALL`, and `TCP` for `TCP_SYN`).
#[inline]
pub fn class_of(r: &FlowRecord) -> usize {
    if r.flags & flags::LATER_FRAGMENT != 0 {
        return class::FRAGMENT;
    }
    match r.protocol {
        proto::TCP if r.tcp_flags & 0x12 == 0x02 => class::TCP_SYN,
        proto::TCP => class::TCP,
        proto::UDP => class::UDP,
        proto::ICMP | proto::ICMPV6 => class::ICMP,
        _ => class::OTHER,
    }
}

/// One direction's counters for one second, by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: [u32; class::COUNT],
    pub bytes: [u64; class::COUNT],
    pub flows: [u32; class::COUNT],
}

impl Counters {
    #[inline]
    fn add(&mut self, c: usize, packets: u64, bytes: u64) {
        let p = packets.min(u64::from(u32::MAX)) as u32;
        for i in [class::ALL, c] {
            self.packets[i] = self.packets[i].saturating_add(p);
            self.bytes[i] = self.bytes[i].saturating_add(bytes);
            self.flows[i] = self.flows[i].saturating_add(1);
        }
        if c == class::TCP_SYN {
            self.packets[class::TCP] = self.packets[class::TCP].saturating_add(p);
            self.bytes[class::TCP] = self.bytes[class::TCP].saturating_add(bytes);
            self.flows[class::TCP] = self.flows[class::TCP].saturating_add(1);
        }
    }

    pub fn add_all(&mut self, o: &Counters) {
        for i in 0..class::COUNT {
            self.packets[i] = self.packets[i].saturating_add(o.packets[i]);
            self.bytes[i] = self.bytes[i].saturating_add(o.bytes[i]);
            self.flows[i] = self.flows[i].saturating_add(o.flows[i]);
        }
    }
}

/// Outbound traffic of a host (it as the source) in one second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outbound {
    pub packets: u64,
    pub bytes: u64,
    pub flows: u32,
}

/// TCP flag combinations, for naming TCP floods.
pub mod tcpkind {
    pub const SYN: usize = 0;
    pub const SYN_ACK: usize = 1;
    pub const ACK: usize = 2;
    pub const RST: usize = 3;
    pub const FIN: usize = 4;
    pub const PSH_ACK: usize = 5;
    pub const XMAS: usize = 6;
    pub const NULL: usize = 7;
    pub const OTHER: usize = 8;
    pub const COUNT: usize = 9;
    pub const NAMES: [&str; COUNT] = [
        "syn", "syn_ack", "ack", "rst", "fin", "psh_ack", "xmas", "null", "other",
    ];

    /// The kind of a TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08,
    /// ACK 0x10, URG 0x20).
    pub fn of(f: u8) -> usize {
        match f & 0x3f {
            0x00 => NULL,
            0x02 => SYN,
            0x12 => SYN_ACK,
            0x10 => ACK,
            0x04 | 0x14 => RST,
            0x01 | 0x11 => FIN,
            0x18 => PSH_ACK,
            0x29 | 0x3f => XMAS,
            _ => OTHER,
        }
    }
}

/// Packet-size histogram bounds (IP length, upper inclusive).
pub const SIZE_BOUNDS: [u32; 12] = [
    64,
    128,
    256,
    512,
    768,
    1024,
    1280,
    1400,
    1500,
    2048,
    4096,
    u32::MAX,
];

/// What classification needs about a busy host's inbound traffic, weighted
/// by (estimated) packets.
#[derive(Debug, Clone)]
pub struct Details {
    /// Records seen (samples for sFlow): the evidence behind the estimates.
    pub records: u64,
    pub packets: u64,
    pub sources: Hll,
    pub ttl: Box<[u64; 256]>,
    pub ttl_known: u64,
    pub src_ports: SpaceSaving<u16, 16>,
    pub dst_ports: SpaceSaving<u16, 16>,
    pub top_sources: SpaceSaving<Addr, 16>,
    pub sizes: [u64; SIZE_BOUNDS.len()],
    pub min_size: u32,
    pub max_size: u32,
    pub tcp: [u64; tcpkind::COUNT],
    pub protocols: SpaceSaving<u8, 8>,
    /// Packets by class, as in [`Counters`] but over the details' lifetime.
    pub classes: [u64; class::COUNT],
    /// UDP packets by source port (top), the amplification signal.
    pub udp_src_ports: SpaceSaving<u16, 16>,
}

impl Default for Details {
    fn default() -> Self {
        Details {
            records: 0,
            packets: 0,
            sources: Hll::default(),
            ttl: Box::new([0; 256]),
            ttl_known: 0,
            src_ports: SpaceSaving::default(),
            dst_ports: SpaceSaving::default(),
            top_sources: SpaceSaving::default(),
            sizes: [0; SIZE_BOUNDS.len()],
            min_size: 0,
            max_size: 0,
            tcp: [0; tcpkind::COUNT],
            protocols: SpaceSaving::default(),
            classes: [0; class::COUNT],
            udp_src_ports: SpaceSaving::default(),
        }
    }
}

impl Details {
    #[inline]
    fn add(&mut self, r: &FlowRecord, c: usize, packets: u64, bytes: u64) {
        self.records += 1;
        self.packets += packets;
        self.sources.insert_hash(hash_addr(&r.src));
        if let Some(t) = r.ttl() {
            self.ttl[usize::from(t)] += packets;
            self.ttl_known += packets;
        }
        self.top_sources.add(r.src, packets);
        if c != class::FRAGMENT && matches!(r.protocol, proto::TCP | proto::UDP) {
            self.src_ports.add(r.src_port, packets);
            self.dst_ports.add(r.dst_port, packets);
            if r.protocol == proto::UDP {
                self.udp_src_ports.add(r.src_port, packets);
            }
        }
        let size = (bytes / packets.max(1)).min(u64::from(u32::MAX)) as u32;
        let b = SIZE_BOUNDS
            .iter()
            .position(|&u| size <= u)
            .unwrap_or(SIZE_BOUNDS.len() - 1);
        self.sizes[b] += packets;
        self.min_size = if self.records == 1 {
            size
        } else {
            self.min_size.min(size)
        };
        self.max_size = self.max_size.max(size);
        if r.protocol == proto::TCP && c != class::FRAGMENT {
            self.tcp[tcpkind::of(r.tcp_flags)] += packets;
        }
        if c == class::OTHER {
            self.protocols.add(r.protocol, packets);
        }
        self.classes[class::ALL] += packets;
        self.classes[c] += packets;
        if c == class::TCP_SYN {
            self.classes[class::TCP] += packets;
        }
    }

    /// What a host's counters alone say (hosts below `detail_pps` have no
    /// details): the class mix, nothing about sources, ports or TTLs.
    pub fn from_counters(c: &Counters) -> Details {
        let mut d = Details {
            records: u64::from(c.flows[class::ALL]),
            packets: u64::from(c.packets[class::ALL]),
            ..Details::default()
        };
        for (a, &p) in d.classes.iter_mut().zip(&c.packets) {
            *a = u64::from(p);
        }
        d
    }

    /// Adds another second's details (an incident accumulates them).
    pub fn merge(&mut self, o: &Details) {
        if o.records == 0 {
            return;
        }
        self.min_size = if self.records == 0 {
            o.min_size
        } else {
            self.min_size.min(o.min_size)
        };
        self.records += o.records;
        self.packets += o.packets;
        self.sources.merge(&o.sources);
        for (a, b) in self.ttl.iter_mut().zip(o.ttl.iter()) {
            *a += b;
        }
        self.ttl_known += o.ttl_known;
        self.src_ports.merge(&o.src_ports);
        self.dst_ports.merge(&o.dst_ports);
        self.top_sources.merge(&o.top_sources);
        self.udp_src_ports.merge(&o.udp_src_ports);
        for (a, b) in self.sizes.iter_mut().zip(o.sizes) {
            *a += b;
        }
        self.max_size = self.max_size.max(o.max_size);
        for (a, b) in self.tcp.iter_mut().zip(o.tcp) {
            *a += b;
        }
        self.protocols.merge(&o.protocols);
        for (a, b) in self.classes.iter_mut().zip(o.classes) {
            *a += b;
        }
    }
}

/// Static per-host limits of a hostgroup, checked on every record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limit {
    pub pps: Option<u64>,
    /// Bits per second.
    pub bps: Option<u64>,
}

/// How much a shard may hold.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_hosts: usize,
    /// Seconds without traffic after which a host is forgotten.
    pub idle_s: u64,
    /// A host whose last second saw this many packets gets details.
    pub detail_pps: u64,
    pub max_detailed: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_hosts: 1_000_000,
            idle_s: 300,
            detail_pps: 500,
            max_detailed: 4096,
        }
    }
}

/// One host's second, as handed to detection.
#[derive(Debug, Clone)]
pub struct HostSecond {
    pub addr: Addr,
    pub group: GroupId,
    pub inbound: Counters,
    pub outbound: Outbound,
    /// This second's details, for hosts busy enough to have them.
    pub details: Option<Box<Details>>,
}

/// A second of one shard.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Unix second.
    pub second: u64,
    pub hosts: Vec<HostSecond>,
}

/// A host's sliding one-second window crossed a static threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trigger {
    pub addr: Addr,
    pub group: GroupId,
    /// When (Unix ms, on the driver's clock).
    pub at_ms: u64,
    pub pps: u64,
    pub bps: u64,
}

/// Ten 100 ms slots: the last second, sliding.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    packets: [u32; 10],
    bytes: [u64; 10],
    /// The 100 ms tick (Unix ms / 100) of the newest slot.
    tick: u64,
    sum_packets: u64,
    sum_bytes: u64,
}

impl Window {
    #[inline]
    fn roll(&mut self, tick: u64) {
        if tick <= self.tick {
            return;
        }
        let steps = (tick - self.tick).min(10);
        for i in 1..=steps {
            let slot = ((self.tick + i) % 10) as usize;
            self.sum_packets -= u64::from(self.packets[slot]);
            self.sum_bytes -= self.bytes[slot];
            self.packets[slot] = 0;
            self.bytes[slot] = 0;
        }
        self.tick = tick;
    }

    #[inline]
    fn add(&mut self, packets: u64, bytes: u64) {
        let slot = (self.tick % 10) as usize;
        let p = packets.min(u64::from(u32::MAX - self.packets[slot]));
        self.packets[slot] += p as u32;
        self.bytes[slot] += bytes;
        self.sum_packets += p;
        self.sum_bytes += bytes;
    }
}

#[derive(Debug, Clone)]
struct Host {
    addr: Addr,
    group: GroupId,
    /// The second `inbound`/`outbound` belong to.
    second: u64,
    inbound: Counters,
    outbound: Outbound,
    window: Window,
    /// Above a static threshold (a trigger was sent; re-armed below it).
    over: bool,
    details: Option<Box<Details>>,
    /// Details are kept until this second.
    hot_until: u64,
}

/// An address as a hash key: its 128 bits.
#[inline]
fn key(a: &Addr) -> u128 {
    u128::from_be_bytes(a.0)
}

/// Hashes 128-bit keys with one 128-bit multiply (addresses are spread
/// well by it; std's SipHash would cost more than the rest of accounting).
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        let r =
            u128::from(n ^ self.0 ^ 0xa076_1d64_78bd_642f) * u128::from(0xe703_7ed1_a0b4_28db_u64);
        self.0 = (r as u64) ^ ((r >> 64) as u64);
    }
    #[inline]
    fn write_u128(&mut self, n: u128) {
        let r = u128::from((n >> 64) as u64 ^ 0xa076_1d64_78bd_642f)
            * u128::from(n as u64 ^ 0xe703_7ed1_a0b4_28db);
        self.0 = (r as u64) ^ ((r >> 64) as u64);
    }
}

type HostMap = HashMap<u128, u32, BuildHasherDefault<KeyHasher>>;

/// Counters a shard keeps about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub hosts: u64,
    pub detailed: u64,
    /// Records for new hosts refused because `max_hosts` was reached.
    pub refused: u64,
    pub evicted: u64,
    /// Promotions to details refused because the pool was full.
    pub details_refused: u64,
}

/// The hosts of one shard, and their current second.
pub struct Shard {
    map: HostMap,
    hosts: Vec<Host>,
    /// Slots of `hosts` touched in the current second.
    dirty: Vec<u32>,
    limits: Vec<Limit>,
    bounds: Bounds,
    second: u64,
    now_ms: u64,
    detailed: usize,
    triggers: Vec<Trigger>,
    evict_cursor: usize,
    pub stats: ShardStats,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("hosts", &self.hosts.len())
            .field("second", &self.second)
            .finish()
    }
}

impl Shard {
    /// `limits[group]` are the static thresholds checked continuously.
    pub fn new(limits: Vec<Limit>, bounds: Bounds) -> Shard {
        Shard {
            map: HostMap::default(),
            hosts: Vec::new(),
            dirty: Vec::new(),
            limits,
            bounds,
            second: 0,
            now_ms: 0,
            detailed: 0,
            triggers: Vec::new(),
            evict_cursor: 0,
            stats: ShardStats::default(),
        }
    }

    /// New thresholds and bounds (config reload).
    pub fn reconfigure(&mut self, limits: Vec<Limit>, bounds: Bounds) {
        self.limits = limits;
        self.bounds = bounds;
    }

    pub fn second(&self) -> u64 {
        self.second
    }

    /// Moves the clock; when a second ends, returns its snapshot. Call
    /// before accounting records of `now_ms`.
    pub fn advance(&mut self, now_ms: u64) -> Option<Snapshot> {
        self.now_ms = self.now_ms.max(now_ms);
        let sec = self.now_ms / 1000;
        if self.second == 0 {
            self.second = sec;
            return None;
        }
        if sec <= self.second {
            return None;
        }
        let snap = self.finish_second();
        self.second = sec;
        Some(snap)
    }

    /// Ends the current second now (end of input), whatever the clock says.
    pub fn flush(&mut self) -> Snapshot {
        let snap = self.finish_second();
        self.second += 1;
        snap
    }

    fn finish_second(&mut self) -> Snapshot {
        let second = self.second;
        let tick = self.now_ms / 100;
        let mut hosts = Vec::with_capacity(self.dirty.len());
        for &slot in &self.dirty {
            let h = &mut self.hosts[slot as usize];
            if h.second != second {
                continue;
            }
            let details = if h.details.is_some() {
                // Hand this second's details over; start the next afresh.
                h.details.replace(Box::default())
            } else {
                None
            };
            hosts.push(HostSecond {
                addr: h.addr,
                group: h.group,
                inbound: h.inbound,
                outbound: h.outbound,
                details,
            });
            h.inbound = Counters::default();
            h.outbound = Outbound::default();
        }
        self.dirty.clear();
        // Re-arm triggers and release details of hosts that calmed down.
        for h in &mut self.hosts {
            h.window.roll(tick);
            if h.over {
                let limit = self
                    .limits
                    .get(usize::from(h.group))
                    .copied()
                    .unwrap_or_default();
                h.over = crossed(&h.window, limit);
            }
            if h.details.is_some()
                && h.hot_until < second
                && h.window.sum_packets < self.bounds.detail_pps
            {
                h.details = None;
                self.detailed -= 1;
            }
        }
        self.evict(second);
        self.stats.hosts = self.hosts.len() as u64;
        self.stats.detailed = self.detailed as u64;
        Snapshot { second, hosts }
    }

    /// Forgets hosts idle longer than `idle_s`, a share of the table per second.
    fn evict(&mut self, second: u64) {
        let n = self.hosts.len();
        if n == 0 {
            return;
        }
        let budget = (n / 10).max(1024).min(n);
        let mut checked = 0;
        while checked < budget && !self.hosts.is_empty() {
            if self.evict_cursor >= self.hosts.len() {
                self.evict_cursor = 0;
            }
            let i = self.evict_cursor;
            let h = &self.hosts[i];
            if h.second + self.bounds.idle_s < second {
                let gone = self.hosts.swap_remove(i);
                self.map.remove(&key(&gone.addr));
                if gone.details.is_some() {
                    self.detailed -= 1;
                }
                if let Some(moved) = self.hosts.get(i) {
                    self.map.insert(key(&moved.addr), i as u32);
                }
                self.stats.evicted += 1;
            } else {
                self.evict_cursor += 1;
            }
            checked += 1;
        }
    }

    /// Triggers raised since the last call.
    pub fn take_triggers(&mut self) -> Vec<Trigger> {
        std::mem::take(&mut self.triggers)
    }

    /// Accounts one record for `host` (the destination, or the source when
    /// `outbound`), a member of `group`.
    #[inline]
    pub fn account(&mut self, r: &FlowRecord, host: Addr, group: GroupId, outbound: bool) {
        let slot = match self.map.get(&key(&host)) {
            Some(&s) => s,
            None => {
                if self.hosts.len() >= self.bounds.max_hosts {
                    self.stats.refused += 1;
                    return;
                }
                let s = self.hosts.len() as u32;
                self.hosts.push(Host {
                    addr: host,
                    group,
                    second: self.second,
                    inbound: Counters::default(),
                    outbound: Outbound::default(),
                    window: Window {
                        tick: self.now_ms / 100,
                        ..Window::default()
                    },
                    over: false,
                    details: None,
                    hot_until: 0,
                });
                self.map.insert(key(&host), s);
                self.dirty.push(s);
                s
            }
        };
        let second = self.second;
        let h = &mut self.hosts[slot as usize];
        if h.second != second {
            h.second = second;
            self.dirty.push(slot);
        }
        h.group = group;
        if outbound {
            h.outbound.packets += r.packets;
            h.outbound.bytes += r.bytes;
            h.outbound.flows += 1;
            return;
        }
        // A flow that lasted D seconds adds its per-second rate.
        let d = u64::from(r.duration_s.max(1));
        let (packets, bytes) = (r.packets.div_ceil(d), r.bytes.div_ceil(d));
        let c = class_of(r);
        h.inbound.add(c, packets, bytes);
        h.window.roll(self.now_ms / 100);
        h.window.add(packets, bytes);

        if h.details.is_none() && h.window.sum_packets >= self.bounds.detail_pps {
            if self.detailed < self.bounds.max_detailed {
                h.details = Some(Box::default());
                self.detailed += 1;
            } else {
                self.stats.details_refused += 1;
            }
        }
        if let Some(d) = &mut h.details {
            d.add(r, c, packets, bytes);
            if h.window.sum_packets >= self.bounds.detail_pps {
                h.hot_until = second + 10;
            }
        }
        if !h.over {
            let limit = self
                .limits
                .get(usize::from(group))
                .copied()
                .unwrap_or_default();
            if crossed(&h.window, limit) {
                h.over = true;
                self.triggers.push(Trigger {
                    addr: host,
                    group,
                    at_ms: self.now_ms,
                    pps: h.window.sum_packets,
                    bps: h.window.sum_bytes * 8,
                });
            }
        }
    }
}

#[inline]
fn crossed(w: &Window, limit: Limit) -> bool {
    limit.pps.is_some_and(|p| w.sum_packets >= p) || limit.bps.is_some_and(|b| w.sum_bytes * 8 >= b)
}

#[cfg(test)]
mod tests;
