//! Accounting (ACC-1…3): per protected host, what each second brought.
//!
//! A [`Shard`] owns the hosts whose address hashes to it, outright: no lock
//! is taken per record. For each host it keeps the current second's
//! counters — inbound packets by class (all, TCP, TCP SYN without ACK, UDP,
//! ICMP, non-first fragments, other protocols), bytes and flows, and
//! outbound totals — and a sliding one-second window (the previous second
//! weighted by the share of it still inside the last 1000 ms, plus the
//! current one) that is checked against the static thresholds on every
//! record. Hosts busy enough to matter (the window above
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
//! counted), idle ones evicted, at most `max_detailed` with details. A
//! host's hot state is one 64-byte cache line in an open-addressing table
//! (load ≤ ½), its cold state (group, outbound, details) beside it, so
//! accounting a record costs one cache miss however many hosts there are;
//! [`Shard::account_batch`] prefetches the lines of a batch ahead.
//!
//! A flow record that covers D seconds (flow export's long flows, reported
//! once per active timeout) is not a one-second burst of D seconds' packets:
//! its per-second rate is added to the second it arrives in and held, by
//! the shard, for the D − 1 seconds that follow (the remainder with the
//! first, so its total is exact; at most [`MAX_HOLD_S`] seconds). A flood
//! carried in persistent 5-tuples reads at its rate from the first record
//! on — after the router's active timeout, which bounds detection delay
//! for flow export.

pub mod sketch;

use levee_collectors::record::{flags, proto};
use levee_collectors::{Addr, FlowRecord};

use crate::hostgroups::GroupId;
use sketch::{hash_addr, Hll, Reservoir, Seen, SpaceSaving};

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

/// A flow record as a shard needs it, with its route: what accounting and
/// details read, in exactly one cache line (a [`FlowRecord`] is 96 bytes
/// and carries what only ingest needs). Receivers write these into the
/// shard rings, so a record costs one line to move between cores.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rec {
    pub src: Addr,
    pub dst: Addr,
    pub packets: u64,
    pub bytes: u64,
    pub src_port: u16,
    pub dst_port: u16,
    pub duration_s: u16,
    /// The hostgroup of the host accounted.
    pub group: GroupId,
    pub protocol: u8,
    pub tcp_flags: u8,
    pub ttl: u8,
    /// [`levee_collectors::record::flags`]; [`flags::NO_L4`] also set for
    /// TCP/UDP flows with both ports 0 (later fragments of flow export
    /// that has no fragment fields, such as NetFlow v5).
    pub flags: u8,
    /// [`ONE_PACKET`], [`OUTBOUND`].
    pub marks: u8,
    /// ICMP/ICMPv6 type (0 for other protocols).
    pub icmp_type: u8,
    /// The sampling rate the counts were multiplied by (saturated at
    /// 65535): `packets / sampling` packets were really seen — the number
    /// behind the estimate, whose noise decides when a rate is known.
    pub sampling: u16,
}

/// A bit of [`Rec::marks`]: the record stands for exactly one packet (an
/// sFlow sample, a captured packet, a flow of one sampled packet), so its
/// bytes are that packet's length, not an average over packets of other
/// sizes.
pub const ONE_PACKET: u8 = 1;
/// A bit of [`Rec::marks`]: accounted for its source (the host sent it),
/// not its destination.
pub const OUTBOUND: u8 = 4;
/// A bit of [`Rec::marks`]: not a record, a second of a long flow's rate
/// held by the shard (counted, no new flow, not in the details).
const HELD: u8 = 2;

/// The longest a flow record's rate is held, seconds (a flow reported after
/// a longer active timeout is spread over this many seconds).
pub const MAX_HOLD_S: u64 = 600;
/// Held flow rates per shard at most; past it a long flow's record counts
/// whole in the second it arrives (its total kept, its rate not).
const MAX_HELD: usize = 131_072;

/// The most packets and bytes one record may stand for: a 600 s flow of
/// minimum-size packets at 400 Gbit/s is about 2^38 packets and 2^44 bytes.
/// An export claiming more (IPFIX counters are 64-bit, an exporter may be
/// forged) is held to these, so that sums over the records of a second
/// cannot wrap.
pub const MAX_RECORD_PACKETS: u64 = 1 << 40;
pub const MAX_RECORD_BYTES: u64 = 1 << 48;

const _: () = assert!(std::mem::size_of::<Rec>() == 64);
const _: () = assert!(std::mem::size_of::<Slot>() == 64);

impl Rec {
    #[inline]
    pub fn new(r: &FlowRecord, group: GroupId, outbound: bool) -> Rec {
        Rec {
            src: r.src,
            dst: r.dst,
            packets: r.packets.min(MAX_RECORD_PACKETS),
            bytes: r.bytes.min(MAX_RECORD_BYTES),
            src_port: r.src_port,
            dst_port: r.dst_port,
            duration_s: r.duration_s,
            group,
            protocol: r.protocol,
            tcp_flags: r.tcp_flags,
            ttl: r.ttl,
            flags: r.flags
                | if matches!(r.protocol, proto::TCP | proto::UDP)
                    && r.src_port == 0
                    && r.dst_port == 0
                {
                    flags::NO_L4
                } else {
                    0
                },
            marks: if r.packets == u64::from(r.sampling.max(1)) {
                ONE_PACKET
            } else {
                0
            } | if outbound { OUTBOUND } else { 0 },
            icmp_type: r.icmp_type,
            sampling: u16::try_from(r.sampling.max(1)).unwrap_or(u16::MAX),
        }
    }

    /// Accounted for its source (the host sent it), not its destination.
    #[inline]
    pub fn outbound(&self) -> bool {
        self.marks & OUTBOUND != 0
    }

    /// The packets really seen behind the record's estimate (at least 1).
    #[inline]
    pub fn seen(&self) -> u64 {
        (self.packets / u64::from(self.sampling.max(1))).max(1)
    }

    /// The host accounted: the destination, or the source when outbound.
    #[inline]
    pub fn host(&self) -> Addr {
        if self.outbound() {
            self.src
        } else {
            self.dst
        }
    }

    #[inline]
    pub fn ttl(&self) -> Option<u8> {
        (self.flags & flags::TTL_KNOWN != 0).then_some(self.ttl)
    }
}

/// The class of a record (besides `ALL`, and `TCP` for `TCP_SYN`).
#[inline]
pub fn class_of(r: &Rec) -> usize {
    if r.flags & flags::LATER_FRAGMENT != 0 {
        return class::FRAGMENT;
    }
    match r.protocol {
        proto::TCP if r.tcp_flags & 0x12 == 0x02 && r.flags & flags::NO_L4 == 0 => class::TCP_SYN,
        proto::TCP => class::TCP,
        proto::UDP => class::UDP,
        proto::ICMP | proto::ICMPV6 => class::ICMP,
        _ => class::OTHER,
    }
}

/// A host's inbound counters for one second: packets by class, and bytes
/// and flows (records) over all classes — what the thresholds check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: [u32; class::COUNT],
    pub bytes: u64,
    pub flows: u32,
    /// Packets really seen behind these estimates (the sampled ones): a
    /// rate from few of them is noise (see [`significant`]).
    pub samples: u32,
}

/// How many standard errors a rate estimate must clear a limit by to be
/// over it: one-sided, 99.87 %.
pub const Z: f64 = 3.0;

/// Whether an estimated `value` is over `limit`, not just by sampling
/// noise: the estimate stands on `samples` packets really seen, each for
/// `per_sample` packets (the sampling rate), and the lower bound of its
/// interval must clear the limit. Sampling 1 in N keeps each packet with
/// probability 1/N, so the estimate's relative error is √((1 − 1/N)/n):
/// unsampled counts (N = 1) are exact, 20 samples at 1:1000 are ±22 %.
#[inline]
pub fn significant(value: f64, samples: f64, per_sample: f64, limit: f64) -> bool {
    if samples < 1.0 {
        return false;
    }
    let rel = ((1.0 - 1.0 / per_sample.max(1.0)) / samples).sqrt();
    value * (1.0 - Z * rel) > limit
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
/// by (estimated) packets. `records`, `packets`, `sources` and `classes`
/// count every record; past [`FULL_RECORDS`] in a second the distributions
/// (TTLs, ports, top sources, sizes, TCP flags, protocols) are estimated
/// from a weighted sample.
///
/// Laid out in order of use: the counters every record adds first (four
/// cache lines), then the summaries, then the big arrays.
#[derive(Debug, Clone)]
#[repr(C)]
pub struct Details {
    /// Records seen (samples for sFlow): the evidence behind the estimates.
    pub records: u64,
    pub packets: u64,
    /// Packets by class, as in [`Counters`] but over the details' lifetime.
    pub classes: [u64; class::COUNT],
    pub ttl_known: u64,
    /// Records that entered the distributions below (all of a host's first
    /// [`FULL_RECORDS`] in a second, then a weighted sample): the number of
    /// observations behind every share estimated from them.
    pub sampled: u64,
    /// Records that were one packet each ([`ONE_PACKET`]): only these say
    /// how long the attack's packets are.
    pub sized: u64,
    /// Packets from exporters not trusted to move routes
    /// ([`flags::UNTRUSTED`]): counted in everything above, never the
    /// ground for a mitigation.
    pub untrusted: u64,
    /// The shortest and longest IP length of one-packet records (0 without).
    pub min_size: u32,
    pub max_size: u32,
    pub sizes: [u64; SIZE_BOUNDS.len()],
    pub tcp: [u64; tcpkind::COUNT],
    pub src_ports: SpaceSaving<u16, 16>,
    pub dst_ports: SpaceSaving<u16, 16>,
    /// UDP packets by source port (top), the amplification signal.
    pub udp_src_ports: SpaceSaving<u16, 16>,
    pub protocols: SpaceSaving<u8, 8>,
    /// ICMP/ICMPv6 packets by type.
    pub icmp_types: SpaceSaving<u8, 8>,
    pub top_sources: SpaceSaving<Addr, 16>,
    /// A uniform sample of the records, for holding rules against.
    pub seen: Reservoir,
    pub sources: Hll,
    pub ttl: [u64; 256],
}

impl Default for Details {
    fn default() -> Self {
        Details {
            records: 0,
            packets: 0,
            sources: Hll::default(),
            ttl: [0; 256],
            ttl_known: 0,
            sampled: 0,
            sized: 0,
            untrusted: 0,
            seen: Reservoir::default(),
            src_ports: SpaceSaving::default(),
            dst_ports: SpaceSaving::default(),
            top_sources: SpaceSaving::default(),
            sizes: [0; SIZE_BOUNDS.len()],
            min_size: 0,
            max_size: 0,
            tcp: [0; tcpkind::COUNT],
            protocols: SpaceSaving::default(),
            icmp_types: SpaceSaving::default(),
            classes: [0; class::COUNT],
            udp_src_ports: SpaceSaving::default(),
        }
    }
}

/// Records of a second whose details are all taken; past them, a sample.
/// A busy host's details (a few KiB) fall out of the caches when thousands
/// of hosts are busy at once (carpet bombing): sampling bounds the cost per
/// record while the distributions stay well estimated from hundreds of
/// records a second.
const FULL_RECORDS: u64 = 256;

impl Details {
    /// Fetches the lines `add` will touch for `r` first.
    #[inline]
    fn prefetch(&self, r: &Rec) {
        let hot = (&raw const self.records).cast::<u8>();
        for line in 0..4 {
            prefetch(hot.wrapping_add(line * 64));
        }
        prefetch(self.sources.register(hash_addr(&r.src)));
        prefetch(&self.ttl[usize::from(r.ttl)]);
        prefetch(&self.top_sources);
        prefetch(&self.src_ports);
        prefetch(&self.dst_ports);
    }

    #[inline]
    fn add(&mut self, r: &Rec, c: usize, packets: u64, bytes: u64) {
        self.records += 1;
        self.packets += packets;
        if r.flags & flags::UNTRUSTED != 0 {
            self.untrusted += packets;
        }
        self.sources.insert_hash(hash_addr(&r.src));
        self.classes[class::ALL] += packets;
        self.classes[c] += packets;
        if c == class::TCP_SYN {
            self.classes[class::TCP] += packets;
        }
        // Past FULL_RECORDS records in its second, a host's distributions
        // are estimated from a sample of its records (1 in k, pseudo-random
        // so that no periodic interleaving of flows can alias with it,
        // each weighted by k); the counts above stay exact.
        let k = (self.records / FULL_RECORDS).next_power_of_two();
        if k > 1 && (self.records.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) & (k - 1) != 0 {
            return;
        }
        let (packets, bytes) = (packets * k, bytes * k);
        self.sampled += 1;
        if let Some(t) = r.ttl() {
            self.ttl[usize::from(t)] += packets;
            self.ttl_known += packets;
        }
        self.top_sources.add(r.src, packets);
        // Without its L4 header a record has no ports or flags (0 there
        // means nothing, and a rule on port 0 would match nothing).
        let l4 = r.flags & flags::NO_L4 == 0;
        if l4 && c != class::FRAGMENT && matches!(r.protocol, proto::TCP | proto::UDP) {
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
        // A flow's average length matches none of its packets when they
        // differ (64- and 1400-byte packets average 732): lengths come
        // only from records of one packet.
        let one = r.marks & ONE_PACKET != 0;
        if one {
            self.sized += 1;
            self.min_size = if self.sized == 1 {
                size
            } else {
                self.min_size.min(size)
            };
            self.max_size = self.max_size.max(size);
        }
        self.seen.offer(
            Seen {
                src: r.src,
                dst_low: u64::from_be_bytes(r.dst.0[8..].try_into().unwrap_or_default()),
                weight: packets,
                src_port: r.src_port,
                dst_port: r.dst_port,
                length: if one {
                    u16::try_from(size).unwrap_or(u16::MAX)
                } else {
                    0
                },
                protocol: r.protocol,
                tcp_flags: r.tcp_flags,
                flags: r.flags,
                icmp_type: r.icmp_type,
            },
            self.sampled
                .wrapping_add(self.records.rotate_left(17))
                .wrapping_mul(0xd6e8_feb8_6659_fd93)
                .rotate_left(29)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        if l4 && r.protocol == proto::TCP && c != class::FRAGMENT {
            self.tcp[tcpkind::of(r.tcp_flags)] += packets;
        }
        // An IPv6 chain that never reached the upper layer names an
        // extension header, which no FlowSpec rule can match.
        if l4 && c == class::OTHER {
            self.protocols.add(r.protocol, packets);
        }
        if l4 && c == class::ICMP {
            self.icmp_types.add(r.icmp_type, packets);
        }
    }

    /// What a host's counters alone say (hosts below `detail_pps` have no
    /// details): the class mix, nothing about sources, ports or TTLs.
    pub fn from_counters(c: &Counters) -> Details {
        let mut d = Details {
            records: u64::from(c.flows),
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
        if o.sized > 0 {
            self.min_size = if self.sized == 0 {
                o.min_size
            } else {
                self.min_size.min(o.min_size)
            };
            self.max_size = self.max_size.max(o.max_size);
        }
        self.sized += o.sized;
        self.sampled += o.sampled;
        self.untrusted += o.untrusted;
        self.seen.merge(&o.seen);
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
        for (a, b) in self.tcp.iter_mut().zip(o.tcp) {
            *a += b;
        }
        self.protocols.merge(&o.protocols);
        self.icmp_types.merge(&o.icmp_types);
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
    /// The hostgroup's prefix aggregates, when it has them.
    pub prefix: Option<PrefixLimit>,
}

/// How a hostgroup's traffic is summed per prefix (DET-6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixLimit {
    pub len_v4: u8,
    pub len_v6: u8,
    /// The prefix limits, if any: a prefix gets details (what
    /// classification needs) once its second passes a quarter of one, and
    /// is looked at every [`PEEK_EVERY_MS`] once its sliding second passes
    /// an eighth (each shard sees its share of a prefix's hosts).
    pub pps: Option<u64>,
    /// Bits per second.
    pub bps: Option<u64>,
}

impl PrefixLimit {
    /// The prefix of `a` (its network address, as an IPv4-mapped or IPv6
    /// key) and its length.
    #[inline]
    pub fn of(&self, a: &Addr) -> (u128, u8) {
        let k = u128::from_be_bytes(a.0);
        let (bits, len) = if a.is_v4_mapped() {
            (96 + u32::from(self.len_v4.min(32)), self.len_v4.min(32))
        } else {
            (u32::from(self.len_v6.min(128)), self.len_v6.min(128))
        };
        let mask = if bits == 0 { 0 } else { !0u128 << (128 - bits) };
        (k & mask, len)
    }
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

/// A hostgroup as a whole in one second (ACC-1 per prefix): the sum of its
/// hosts' seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupSecond {
    /// Inbound packets by class.
    pub packets: [u64; class::COUNT],
    pub bytes: u64,
    pub flows: u64,
    pub out_packets: u64,
    pub out_bytes: u64,
    pub out_flows: u64,
    /// Hosts with traffic in the second.
    pub hosts: u64,
}

impl GroupSecond {
    /// Per-group sums of a second's hosts (`groups` hostgroups).
    pub fn of(hosts: &[HostSecond], groups: usize) -> Vec<GroupSecond> {
        let mut out = vec![GroupSecond::default(); groups];
        for h in hosts {
            let Some(g) = out.get_mut(usize::from(h.group)) else {
                continue;
            };
            for (a, &p) in g.packets.iter_mut().zip(&h.inbound.packets) {
                *a += u64::from(p);
            }
            g.bytes += h.inbound.bytes;
            g.flows += u64::from(h.inbound.flows);
            g.out_packets += h.outbound.packets;
            g.out_bytes += h.outbound.bytes;
            g.out_flows += u64::from(h.outbound.flows);
            g.hosts += 1;
        }
        out
    }
}

/// A prefix of a hostgroup in one second: its hosts' traffic summed
/// (DET-6), as one shard saw it (the detector adds the shards up).
#[derive(Debug, Clone)]
pub struct PrefixSecond {
    /// The network address and the prefix length.
    pub prefix: Addr,
    pub len: u8,
    pub group: GroupId,
    pub inbound: Counters,
    /// Hosts of the prefix with inbound traffic in the second.
    pub hosts: u32,
    /// The busiest of them, by packets.
    pub top_hosts: Vec<(Addr, u64)>,
    /// What classification needs, once the prefix is busy.
    pub details: Option<Box<Details>>,
}

/// A second of one shard.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Unix second.
    pub second: u64,
    pub hosts: Vec<HostSecond>,
    pub prefixes: Vec<PrefixSecond>,
}

/// The part of a prefix aggregate every inbound record touches, one cache
/// line: this second's counters, when the prefix may be looked at next,
/// and its details once it is busy. The rest ([`PrefixAcc`]) is touched
/// once per host and second, at the second's end, and per record only
/// while the prefix is busy.
#[derive(Debug, Clone, Default)]
#[repr(C, align(64))]
struct PrefixRun {
    inbound: Counters,
    second: u32,
    /// When the prefix may be looked at next, in ms after `second` began.
    peek_in: u16,
    /// Hosts with inbound records this second (for looks before it ends;
    /// the second's sum counts them exactly).
    hosts: u16,
    details: Option<Box<Details>>,
}

impl PrefixRun {
    /// When the prefix may be looked at next (Unix ms).
    #[inline]
    fn peek_at(&self) -> u64 {
        u64::from(self.second) * 1000 + u64::from(self.peek_in)
    }

    /// Sets when the prefix may be looked at next.
    #[inline]
    fn set_peek_at(&mut self, ms: u64) {
        let from = u64::from(self.second) * 1000;
        self.peek_in = ms.saturating_sub(from).min(u64::from(u16::MAX)) as u16;
    }
}

/// A prefix aggregate's key and the sums made from its hosts.
#[derive(Debug, Clone, Default)]
struct PrefixAcc {
    key: u128,
    len: u8,
    group: GroupId,
    /// This second's hosts with inbound traffic and the busiest of them
    /// (packets), summed from the hosts at the second's end.
    hosts: u32,
    top: Vec<(Addr, u64)>,
    /// While busy this second: the busiest hosts since, counted per record
    /// (for looks before the second ends).
    busy_top: SpaceSaving<Addr, 8>,
    /// The last second summed, which one, its hosts and busiest hosts.
    prev: Counters,
    prev_second: u32,
    prev_hosts: u32,
    prev_top: Vec<(Addr, u64)>,
}

/// Busiest hosts a prefix aggregate names.
const PREFIX_TOP: usize = 8;

/// Keeps `(a, n)` among the `PREFIX_TOP` largest of `top` (each host is
/// offered once, with its whole second).
fn keep_top(top: &mut Vec<(Addr, u64)>, a: Addr, n: u64) {
    if top.len() < PREFIX_TOP {
        top.push((a, n));
        return;
    }
    if let Some(min) = top.iter_mut().min_by_key(|t| t.1) {
        if n > min.1 {
            *min = (a, n);
        }
    }
}

/// A look at a busy prefix in one shard before its second ends: its
/// sliding last second (the part of the second before still within the
/// last 1000 ms, and this one so far), so a spread attack is judged
/// within the second it starts in, as a host's trigger is. The detector
/// adds up the shards' looks.
#[derive(Debug, Clone)]
pub struct PrefixPeek {
    pub prefix: Addr,
    pub len: u8,
    pub group: GroupId,
    /// When (Unix ms, on the driver's clock), and the second so far.
    pub at_ms: u64,
    pub second: u64,
    /// The sliding second's counters.
    pub window: Counters,
    /// Hosts hit (in this second so far, or the one before if more), and
    /// the busiest over the sliding second (packets).
    pub hosts: u32,
    pub top_hosts: Vec<(Addr, u64)>,
    /// This second's details so far, once the prefix has them.
    pub details: Option<Box<Details>>,
}

/// Counters scaled by `num / den` (the part of a second still within a
/// sliding window).
fn scaled(c: &Counters, num: u64, den: u64) -> Counters {
    let s32 = |v: u32| (u64::from(v) * num / den) as u32;
    let mut out = Counters {
        bytes: (u128::from(c.bytes) * u128::from(num) / u128::from(den.max(1))) as u64,
        flows: s32(c.flows),
        samples: s32(c.samples),
        ..Counters::default()
    };
    for (o, v) in out.packets.iter_mut().zip(c.packets) {
        *o = s32(v);
    }
    out
}

/// Adds `b` to `a`.
pub fn add_counters(a: &mut Counters, b: &Counters) {
    for (x, y) in a.packets.iter_mut().zip(b.packets) {
        *x = x.saturating_add(y);
    }
    a.bytes = a.bytes.saturating_add(b.bytes);
    a.flows = a.flows.saturating_add(b.flows);
    a.samples = a.samples.saturating_add(b.samples);
}

/// Prefix aggregates a shard keeps at most (the config bounds them per
/// hostgroup; this bounds them per shard whatever the config). An
/// aggregate without traffic for `idle_s` is forgotten, its slot reused.
const MAX_PREFIXES: usize = 65_536;
/// How often idle prefix aggregates are swept (seconds).
const PREFIX_SWEEP_S: u32 = 10;
/// Prefixes with details per shard at most.
const MAX_PREFIX_DETAILED: usize = 256;
/// Packets really seen in a prefix's second before it may hold details (a
/// forged sample at sampling 1:65535 is not a busy prefix).
const PREFIX_MIN_SAMPLES: u32 = 4;
/// A host whose prefix the shard had no room for (until its next second).
const NO_PREFIX: u32 = u32::MAX;

/// A host's estimated last-second rate crossed a static threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trigger {
    pub addr: Addr,
    pub group: GroupId,
    /// When (Unix ms, on the driver's clock).
    pub at_ms: u64,
    pub pps: u64,
    pub bps: u64,
    /// Packets really seen behind the window's estimate.
    pub samples: u64,
}

/// A look at the details of a host that crossed a threshold, before its
/// second ends: the detector classifies from it at once, so a rule need
/// not wait for the second's snapshot (at 1:1000 sampling the first
/// samples are all there is for a while). The second's snapshot still
/// carries the whole second; a peek only stands in for it until then.
#[derive(Debug, Clone)]
pub struct Peek {
    pub addr: Addr,
    pub group: GroupId,
    /// The second the details are of (so far).
    pub second: u64,
    pub details: Box<Details>,
}

/// How often a triggered host's details are looked at, and for how long
/// after its trigger.
pub const PEEK_EVERY_MS: u64 = 200;
/// How often a prefix that is not busy enough to be looked at is checked
/// again (the check reads the second before, off the record's line).
const PREFIX_CHECK_MS: u64 = 25;
pub const PEEK_FOR_MS: u64 = 3_000;
/// Hosts watched at once (a carpet bombing triggers thousands: the first
/// ones are watched, the others wait for their seconds).
const MAX_WATCHED: usize = 256;

/// A host being peeked at.
#[derive(Debug, Clone, Copy)]
struct Watch {
    key: u128,
    group: GroupId,
    next_ms: u64,
    until_ms: u64,
}

/// Disjoint classes as a slot stores them; [`Counters`] is the view.
mod slotclass {
    pub const TCP: usize = 0;
    pub const SYN: usize = 1;
    pub const UDP: usize = 2;
    pub const ICMP: usize = 3;
    pub const FRAG: usize = 4;
    pub const OTHER: usize = 5;
    pub const COUNT: usize = 6;
}

#[inline]
fn slot_class(c: usize) -> usize {
    match c {
        class::TCP_SYN => slotclass::SYN,
        class::TCP => slotclass::TCP,
        class::UDP => slotclass::UDP,
        class::ICMP => slotclass::ICMP,
        class::FRAGMENT => slotclass::FRAG,
        _ => slotclass::OTHER,
    }
}

/// Bits of [`Slot::flags_flows`] above the flow count: the host has moved
/// to the larger table (in a table being migrated away from); details were
/// refused this second (counted once); the slot holds a host; it has
/// details; its window is over a threshold (a trigger was raised).
const MOVED: u32 = 1 << 27;
const REFUSED: u32 = 1 << 28;
const OCCUPIED: u32 = 1 << 29;
const DETAILED: u32 = 1 << 30;
const OVER: u32 = 1 << 31;
const FLOWS: u32 = MOVED - 1;

/// Records a host needs in its current second to get details.
const DETAIL_RECORDS: u32 = 4;

/// A host's hot state with its key: exactly one cache line, so accounting a
/// record costs one memory access in a table far larger than the caches.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: u128,
    /// Inbound bytes of `second`.
    bytes: u64,
    /// The Unix second the counters belong to (rolled over lazily when a
    /// record of a later second arrives).
    second: u32,
    /// Flows (records) of `second`, and the OCCUPIED, DETAILED, OVER bits.
    flags_flows: u32,
    /// Inbound packets of `second` by disjoint class.
    packets: [u32; slotclass::COUNT],
    /// All packets, and bytes / 256, of the second before `second`.
    prev_packets: u32,
    prev_bytes_256: u32,
}

impl Slot {
    #[inline]
    fn occupied(&self) -> bool {
        self.flags_flows & OCCUPIED != 0
    }

    #[inline]
    fn all_packets(&self) -> u64 {
        self.packets.iter().map(|&p| u64::from(p)).sum()
    }

    /// Moves the counters to second `s` (the previous one becomes `prev`).
    #[inline]
    fn roll(&mut self, s: u32) {
        if self.second == s {
            return;
        }
        if self.second + 1 == s {
            self.prev_packets = self.all_packets().min(u64::from(u32::MAX)) as u32;
            self.prev_bytes_256 = (self.bytes / 256).min(u64::from(u32::MAX)) as u32;
        } else {
            self.prev_packets = 0;
            self.prev_bytes_256 = 0;
            // A quiet second in between: the window emptied, so a
            // threshold crossing from now on is a new one.
            self.flags_flows &= !OVER;
        }
        self.second = s;
        self.packets = [0; slotclass::COUNT];
        self.bytes = 0;
        self.flags_flows &= !(FLOWS | REFUSED);
    }

    /// The last second's rate, sliding: the previous second weighted by the
    /// part of it still within the last 1000 ms, plus the current one.
    #[inline]
    fn window(&self, ms_in_second: u64) -> (u64, u64) {
        let back = 1000 - ms_in_second.min(999);
        let p = u64::from(self.prev_packets) * back / 1000 + self.all_packets();
        let b = u64::from(self.prev_bytes_256) * 256 * back / 1000 + self.bytes;
        (p, b)
    }

    fn counters(&self) -> Counters {
        let p = &self.packets;
        let mut c = Counters {
            bytes: self.bytes,
            flows: self.flags_flows & FLOWS,
            ..Counters::default()
        };
        c.packets[class::TCP] = p[slotclass::TCP].saturating_add(p[slotclass::SYN]);
        c.packets[class::TCP_SYN] = p[slotclass::SYN];
        c.packets[class::UDP] = p[slotclass::UDP];
        c.packets[class::ICMP] = p[slotclass::ICMP];
        c.packets[class::FRAGMENT] = p[slotclass::FRAG];
        c.packets[class::OTHER] = p[slotclass::OTHER];
        c.packets[class::ALL] = self.all_packets().min(u64::from(u32::MAX)) as u32;
        c
    }
}

/// The rest of a host's state, beside its slot, touched rarely.
#[derive(Debug, Default, Clone)]
struct Cold {
    group: GroupId,
    outbound: Outbound,
    /// The second `outbound` belongs to.
    out_second: u32,
    details: Option<Box<Details>>,
    /// Details are kept until this second.
    hot_until: u32,
    /// Inbound packets really seen (not scaled by sampling) in the slot's
    /// second, and in the second before it.
    samples: u32,
    prev_samples: u32,
    /// The host's prefix aggregate (index + 1 into the shard's; 0: none
    /// yet or none).
    prefix: u32,
}

/// Hashes a key to a table position.
#[inline]
fn slot_hash(k: u128) -> u64 {
    let r = u128::from((k >> 64) as u64 ^ 0xa076_1d64_78bd_642f)
        * u128::from(k as u64 ^ 0xe703_7ed1_a0b4_28db);
    (r as u64) ^ ((r >> 64) as u64)
}

/// Hints the CPU to fetch the line holding `p` before it is needed.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hosts by address: open addressing with linear probing over one-line
/// slots, and the cold state in a parallel vector. Deletion shifts the
/// probe chain back (no tombstones). Growth is the shard's business: it
/// migrates hosts to a table twice the size a few at a time.
struct Table {
    slots: Zeroed<Slot>,
    cold: Zeroed<Cold>,
    mask: usize,
    len: usize,
}

/// Types whose all-zero bytes are a valid value (their `Default`).
///
/// # Safety
/// Implement only for types where every field is an integer, an array of
/// them, `Option<Box<_>>` (None is the null pointer) or another such type.
unsafe trait Zeroable {}
// SAFETY: integers, arrays of integers and u128 keys only.
unsafe impl Zeroable for Slot {}
// SAFETY: integers and an Option<Box<Details>>, whose None is null.
unsafe impl Zeroable for Cold {}

/// `n` zeroed values in a fresh anonymous mapping of their own.
///
/// The kernel hands out zero pages lazily, so making a table costs nothing
/// until its slots are used, and growing a table never stalls the shard on
/// clearing hundreds of megabytes at once (the global allocator cannot
/// promise that for 64-byte-aligned types: it zeroes them with a memset).
/// The mapping is advised to be backed with huge pages: a table of a million
/// hosts spans hundreds of megabytes, and with 4 KiB pages nearly every
/// access would also miss the TLB (doubly costly under a hypervisor). Only
/// advice: without transparent huge pages nothing changes.
struct Zeroed<T: Zeroable> {
    ptr: std::ptr::NonNull<T>,
    len: usize,
}

/// A transparent huge page (x86-64, arm64 with 4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// The length mapped for `bytes` bytes of values: whole huge pages once
/// there is at least one, so the kernel can back all of it with them.
fn mapped_len(bytes: usize) -> usize {
    if bytes >= HUGE_PAGE {
        bytes.next_multiple_of(HUGE_PAGE)
    } else {
        bytes
    }
}

/// Bytes of host tables mapped in this process (they bypass the global
/// allocator, so heap statistics do not see them).
static MAPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Bytes held by every shard's host tables — current, old, being made or
/// being unmapped — in this process.
pub fn mapped_bytes() -> usize {
    MAPPED.load(std::sync::atomic::Ordering::Relaxed)
}

// SAFETY: `Zeroed` owns its values like a `Box<[T]>` does.
unsafe impl<T: Zeroable + Send> Send for Zeroed<T> {}

impl<T: Zeroable> Zeroed<T> {
    fn new(n: usize) -> Zeroed<T> {
        let n = n.max(1);
        let bytes = std::mem::size_of::<T>()
            .checked_mul(n)
            .expect("table size fits in memory");
        assert!(std::mem::align_of::<T>() <= 4096 && bytes > 0);
        // A large table starts on a huge-page boundary: mmap only promises
        // 4 KiB alignment, and the kernel backs with a huge page only a
        // whole aligned 2 MiB of the mapping — unaligned, a table of a few
        // megabytes got almost none, and every host looked up under a
        // hypervisor paid a two-dimensional page walk. So a huge page more
        // is mapped, and what lies before the boundary and after the
        // table is given back.
        let len = mapped_len(bytes);
        let slack = if len >= HUGE_PAGE { HUGE_PAGE } else { 0 };
        // SAFETY: an anonymous private mapping; the kernel returns it
        // zero-filled and page-aligned (which satisfies `T`'s alignment,
        // asserted above), and all-zero bytes are valid `T`s. The parts
        // unmapped lie inside it and outside the `len` bytes kept.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len + slack,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                let layout = std::alloc::Layout::array::<T>(n).expect("table layout");
                std::alloc::handle_alloc_error(layout);
            }
            let head = if slack == 0 {
                0
            } else {
                (p as usize).next_multiple_of(HUGE_PAGE) - p as usize
            };
            if head > 0 {
                libc::munmap(p, head);
            }
            let p = p.cast::<u8>().add(head).cast::<libc::c_void>();
            if slack > head {
                libc::munmap(p.cast::<u8>().add(len).cast(), slack - head);
            }
            #[cfg(target_os = "linux")]
            libc::madvise(p, len, libc::MADV_HUGEPAGE);
            MAPPED.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
            Zeroed {
                ptr: std::ptr::NonNull::new_unchecked(p.cast::<T>()),
                len: n,
            }
        }
    }
}

impl<T: Zeroable> std::ops::Deref for Zeroed<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialised values (zeroed) live at `ptr`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> Zeroed<T> {
    /// Faults every page in now, so touching the values later never waits
    /// on the kernel. `MADV_POPULATE_WRITE` (Linux 5.14) does it in one
    /// call; elsewhere each page is written once.
    fn populate(&mut self) {
        let bytes = std::mem::size_of::<T>() * self.len;
        let base = self.ptr.as_ptr().cast::<u8>();
        #[cfg(target_os = "linux")]
        // SAFETY: the range lies inside the mapping made in `new`.
        if unsafe { libc::madvise(base.cast(), bytes, libc::MADV_POPULATE_WRITE) } == 0 {
            return;
        }
        for at in (0..bytes).step_by(4096) {
            // SAFETY: `at < bytes`, inside the mapping; writing a zero byte
            // over a zero byte keeps every value as it was.
            unsafe { std::ptr::write_volatile(base.add(at), 0) };
        }
    }
}

impl<T: Zeroable> std::ops::DerefMut for Zeroed<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as for `deref`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> Drop for Zeroed<T> {
    fn drop(&mut self) {
        // SAFETY: the values are dropped once, then the mapping made in
        // `new` (of exactly this size) is removed; nothing refers to it.
        unsafe {
            if std::mem::needs_drop::<T>() {
                std::ptr::drop_in_place(&mut **self as *mut [T]);
            }
            let len = mapped_len(std::mem::size_of::<T>() * self.len);
            libc::munmap(self.ptr.as_ptr().cast(), len);
            MAPPED.fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Table {
    fn with_capacity(n: usize) -> Table {
        let cap = (n * 2).next_power_of_two().max(1024);
        Table {
            slots: Zeroed::new(cap),
            cold: Zeroed::new(cap),
            mask: cap - 1,
            len: 0,
        }
    }

    /// An empty table of `slots` slots (a power of two), its pages faulted
    /// in: made off the shard's thread, it is ready to use at full speed.
    fn populated(slots: usize) -> Table {
        let mut t = Table::with_capacity(slots / 2);
        t.slots.populate();
        t.cold.populate();
        t
    }

    fn bytes(&self) -> usize {
        mapped_len(self.slots.len() * std::mem::size_of::<Slot>())
            + mapped_len(self.cold.len() * std::mem::size_of::<Cold>())
    }

    #[inline]
    fn home(&self, key: u128) -> usize {
        slot_hash(key) as usize & self.mask
    }

    /// The slot of `key`, or the empty slot where it would go.
    #[inline]
    fn find(&self, key: u128) -> (usize, bool) {
        let mut i = self.home(key);
        loop {
            let s = &self.slots[i];
            if !s.occupied() {
                return (i, false);
            }
            if s.key == key {
                return (i, true);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The slot of `key` if it is still here (in a table being migrated
    /// away from, moved hosts are skipped but keep the probe chains).
    fn find_live(&self, key: u128) -> Option<usize> {
        let mut i = self.home(key);
        loop {
            let s = &self.slots[i];
            if !s.occupied() {
                return None;
            }
            if s.key == key && s.flags_flows & MOVED == 0 {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The linear-probing invariant: every member is reachable from its
    /// home slot without crossing an empty one, and `len` counts those not
    /// moved away.
    #[cfg(test)]
    fn check(&self) -> Result<(), String> {
        let mut n = 0;
        for (pos, s) in self.slots.iter().enumerate() {
            if !s.occupied() {
                continue;
            }
            n += usize::from(s.flags_flows & MOVED == 0);
            let mut i = self.home(s.key);
            while i != pos {
                if !self.slots[i].occupied() {
                    return Err(format!(
                        "slot {pos} unreachable from its home {}",
                        self.home(s.key)
                    ));
                }
                i = (i + 1) & self.mask;
            }
        }
        if n == self.len {
            Ok(())
        } else {
            Err(format!("{n} members, len {}", self.len))
        }
    }

    /// Removes slot `i`, shifting later members of its probe chain back.
    fn remove(&mut self, mut i: usize) -> Cold {
        let gone = std::mem::take(&mut self.cold[i]);
        self.slots[i] = Slot::default();
        self.len -= 1;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            if !self.slots[j].occupied() {
                return gone;
            }
            let home = self.home(self.slots[j].key);
            // Move j back to i unless its home lies cyclically in (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.slots[i] = self.slots[j];
                self.cold[i] = std::mem::take(&mut self.cold[j]);
                self.slots[j] = Slot::default();
                i = j;
            }
        }
    }
}

/// Bytes of one table slot (hot and cold parts).
const SLOT_BYTES: usize = std::mem::size_of::<Slot>() + std::mem::size_of::<Cold>();
/// Tables from this size on are made (and unmapped) off the shard's thread.
const OFF_THREAD_BYTES: usize = 8 << 20;

/// Drops a table that is no longer used: a large one on a thread of its
/// own, since giving hundreds of megabytes back to the kernel takes a while.
fn retire(t: Table) {
    if t.bytes() < OFF_THREAD_BYTES {
        return drop(t);
    }
    // Without a thread to be had, the closure, table and all, is dropped
    // right here.
    let _ = std::thread::Builder::new()
        .name("levee-table".into())
        .spawn(move || drop(t));
}

/// Counters a shard keeps about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub hosts: u64,
    /// Prefix aggregates in use.
    pub prefixes: u64,
    pub detailed: u64,
    /// Records for new hosts refused because `max_hosts` was reached.
    pub refused: u64,
    pub evicted: u64,
    /// Host-seconds that were busy enough for details but found the pool
    /// (`max_detailed`) full.
    pub details_refused: u64,
    /// Details taken from a far quieter host for a busier one.
    pub details_replaced: u64,
    /// Long flows whose rate could not be held (the shard's `MAX_HELD`
    /// reached): counted whole in the second their record arrived.
    pub held_refused: u64,
    /// Long flows' rates being held now.
    pub held: u64,
    /// Silent hosts forgotten to make room for new ones in a full table.
    pub made_room: u64,
    /// Hosts left out of prefix aggregates for a second: the shard held as
    /// many as it may, none idle.
    pub prefixes_refused: u64,
    /// Idle aggregates forgotten to make room, and details a much busier
    /// prefix took over.
    pub prefixes_evicted: u64,
    pub prefix_details_taken: u64,
}

/// Tag on dirty-list entries that index the table being migrated away from.
const OLD: u32 = 1 << 31;
/// Old slots migrated with each new host while a migration runs (enough to
/// finish before the new table fills), and at the end of each second.
const MIGRATE_PER_INSERT: usize = 16;
const MIGRATE_PER_SECOND: usize = 1 << 16;

/// The hosts of one shard, and their current second.
///
/// When the table passes half full it is not rebuilt at once (a million
/// hosts would stall the shard for half a second, its rings overflowing):
/// a table twice the size is made ready on another thread, takes over, and
/// the hosts move across a few at a time — each new host moves sixteen old
/// slots, each second's end 65536, and a host found still in the old table
/// moves as it is found.
pub struct Shard {
    table: Table,
    /// The table being migrated away from, and the next slot to migrate.
    old: Option<Table>,
    migrated: usize,
    /// The next table, being made on a thread of its own (see
    /// [`Shard::request_growth`]).
    next: Option<std::thread::JoinHandle<Table>>,
    /// Tables from this many bytes on are made off the shard's thread
    /// ([`OFF_THREAD_BYTES`]; tests lower it).
    off_thread_bytes: usize,
    /// Slots touched in the current second (tagged [`OLD`] for the old
    /// table's).
    dirty: Vec<u32>,
    limits: Vec<Limit>,
    bounds: Bounds,
    second: u64,
    now_ms: u64,
    detailed: usize,
    /// Hosts holding details (keys; may hold some released since, swept
    /// each second).
    pool: Vec<u128>,
    /// The quietest hosts holding details at the last second's end, the
    /// quietest last: whom a much busier host takes details from.
    weakest: Vec<(u64, u128)>,
    triggers: Vec<Trigger>,
    /// Hosts that crossed a threshold lately, peeked at until their
    /// evidence has had time to come in.
    watched: Vec<Watch>,
    /// Long flows' per-second rates, each with the last second it covers.
    held: Vec<(Rec, u32)>,
    /// Prefix aggregates, their ids by (hostgroup, prefix), and those
    /// touched this second.
    prefix_runs: Vec<PrefixRun>,
    prefixes: Vec<PrefixAcc>,
    prefix_ids: std::collections::HashMap<(GroupId, u128), u32>,
    prefix_dirty: Vec<u32>,
    prefix_due: Vec<u32>,
    prefix_detailed: usize,
    /// Slots of forgotten aggregates, for reuse.
    prefix_free: Vec<u32>,
    /// The second the aggregates were last thinned out when full, and when
    /// a busy prefix may next look for details to take over (Unix ms).
    prefix_evicted: u32,
    prefix_steal_ms: u64,
    evict_cursor: usize,
    pub stats: ShardStats,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("hosts", &self.hosts())
            .field("second", &self.second)
            .finish()
    }
}

/// Records [`Shard::account_batch`] takes at a time.
const CHUNK: usize = 64;
/// How many records ahead each prefetch stage runs.
const AHEAD: usize = 8;

impl Shard {
    /// `limits[group]` are the static thresholds checked continuously.
    pub fn new(limits: Vec<Limit>, bounds: Bounds) -> Shard {
        Shard {
            table: Table::populated(2048),
            old: None,
            migrated: 0,
            next: None,
            off_thread_bytes: OFF_THREAD_BYTES,
            dirty: Vec::new(),
            limits,
            bounds,
            second: 0,
            now_ms: 0,
            detailed: 0,
            pool: Vec::new(),
            weakest: Vec::new(),
            triggers: Vec::new(),
            watched: Vec::new(),
            held: Vec::new(),
            prefix_runs: Vec::new(),
            prefixes: Vec::new(),
            prefix_ids: std::collections::HashMap::new(),
            prefix_dirty: Vec::new(),
            prefix_due: Vec::new(),
            prefix_detailed: 0,
            prefix_free: Vec::new(),
            prefix_evicted: 0,
            prefix_steal_ms: 0,
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
        self.apply_held();
        Some(snap)
    }

    /// Adds the held rates of long flows to the new second (a second the
    /// clock skipped gets none: only replay of sparse input skips any).
    fn apply_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let now = self.second as u32;
        let mut held = std::mem::take(&mut self.held);
        held.retain(|(_, until)| *until >= now);
        for (r, _) in &held {
            self.account(r);
        }
        self.stats.held = held.len() as u64;
        self.held = held;
    }

    /// Ends the current second now (end of input), whatever the clock says.
    pub fn flush(&mut self) -> Snapshot {
        let snap = self.finish_second();
        self.second += 1;
        snap
    }

    /// Bytes of this shard's host tables: the current one, and the old one
    /// while hosts move across (not a table still being made).
    pub fn table_bytes(&self) -> usize {
        self.table.bytes() + self.old.as_ref().map_or(0, Table::bytes)
    }

    /// Whether hosts are moving to a larger table.
    pub fn migrating(&self) -> bool {
        self.old.is_some()
    }

    /// Hosts tracked, in both tables while migrating.
    fn hosts(&self) -> usize {
        self.table.len + self.old.as_ref().map_or(0, |o| o.len)
    }

    fn finish_second(&mut self) -> Snapshot {
        let second = self.second as u32;
        self.dirty.sort_unstable();
        self.dirty.dedup();
        let mut hosts = Vec::with_capacity(self.dirty.len());
        for &d in &self.dirty {
            let i = (d & !OLD) as usize;
            let (slot, cold) = if d & OLD == 0 {
                (&mut self.table.slots[i], &mut self.table.cold[i])
            } else if let Some(old) = &mut self.old {
                (&mut old.slots[i], &mut old.cold[i])
            } else {
                continue;
            };
            // A host moved across since is on the list again, untagged.
            if !slot.occupied() || slot.flags_flows & MOVED != 0 {
                continue;
            }
            let mut inbound = if slot.second == second {
                slot.counters()
            } else {
                Counters::default()
            };
            if slot.second == second {
                inbound.samples = cold.samples;
            }
            let outbound = if cold.out_second == second {
                cold.outbound
            } else {
                Outbound::default()
            };
            // (A second of held long flows brings packets but no records.)
            if inbound.flows == 0 && inbound.packets[class::ALL] == 0 && outbound.flows == 0 {
                continue;
            }
            let details = if slot.flags_flows & DETAILED != 0 {
                // Hand this second's details over; start the next afresh.
                if cold.hot_until < second {
                    slot.flags_flows &= !DETAILED;
                    self.detailed -= 1;
                    cold.details.take()
                } else {
                    cold.details.replace(Box::default())
                }
            } else {
                None
            };
            // The host's part of its prefix's second (DET-6).
            if let Some(id) = cold.prefix.checked_sub(1).map(|id| id as usize) {
                if inbound.packets[class::ALL] > 0
                    && self.prefix_runs.get(id).is_some_and(|r| r.second == second)
                {
                    let acc = &mut self.prefixes[id];
                    acc.hosts += 1;
                    keep_top(
                        &mut acc.top,
                        Addr(slot.key.to_be_bytes()),
                        u64::from(inbound.packets[class::ALL]),
                    );
                }
            }
            hosts.push(HostSecond {
                addr: Addr(slot.key.to_be_bytes()),
                group: cold.group,
                inbound,
                outbound,
                details,
            });
        }
        self.dirty.clear();
        let mut prefixes = Vec::with_capacity(self.prefix_dirty.len());
        for id in std::mem::take(&mut self.prefix_dirty) {
            let (Some(run), Some(acc)) = (
                self.prefix_runs.get_mut(id as usize),
                self.prefixes.get_mut(id as usize),
            ) else {
                continue;
            };
            if run.second != second {
                continue;
            }
            let details = run.details.take();
            if details.is_some() {
                self.prefix_detailed -= 1;
            }
            acc.top.sort_by_key(|t| std::cmp::Reverse(t.1));
            if run.inbound.packets[class::ALL] > 0 {
                prefixes.push(PrefixSecond {
                    prefix: Addr(acc.key.to_be_bytes()),
                    len: acc.len,
                    group: acc.group,
                    inbound: run.inbound,
                    hosts: acc.hosts,
                    top_hosts: acc.top.clone(),
                    details,
                });
            }
            // The second ended becomes the one before.
            acc.prev = run.inbound;
            acc.prev_second = second;
            acc.prev_hosts = std::mem::take(&mut acc.hosts);
            std::mem::swap(&mut acc.prev_top, &mut acc.top);
            acc.top.clear();
            acc.busy_top = SpaceSaving::default();
        }
        self.evict(u64::from(second));
        self.sweep_prefixes(second);
        self.sweep_details(second);
        self.migrate(MIGRATE_PER_SECOND);
        self.poll_growth(false);
        if self.table.len * 2 > self.table.slots.len() {
            self.request_growth();
        }
        self.stats.hosts = self.hosts() as u64;
        self.stats.detailed = self.detailed as u64;
        self.stats.prefixes = self.prefix_ids.len() as u64;
        Snapshot {
            second: u64::from(second),
            hosts,
            prefixes,
        }
    }

    /// Forgets the prefix aggregates idle past `idle_s` (every
    /// [`PREFIX_SWEEP_S`]). A host still pointing at a forgotten slot
    /// looks its prefix up again with its next second's first record.
    fn sweep_prefixes(&mut self, second: u32) {
        if self.prefix_ids.is_empty() || !second.is_multiple_of(PREFIX_SWEEP_S) {
            return;
        }
        let idle = u32::try_from(self.bounds.idle_s).unwrap_or(u32::MAX);
        let (runs, accs, free) = (
            &mut self.prefix_runs,
            &mut self.prefixes,
            &mut self.prefix_free,
        );
        let mut detailed = 0;
        self.prefix_ids.retain(|_, id| {
            let run = &mut runs[*id as usize];
            if run.second.saturating_add(idle) >= second {
                return true;
            }
            if run.details.is_some() {
                detailed += 1;
            }
            *run = PrefixRun::default();
            accs[*id as usize] = PrefixAcc::default();
            free.push(*id);
            false
        });
        self.prefix_detailed -= detailed;
        // A forgotten slot (length 0) is looked at no more.
        let accs = &self.prefixes;
        self.prefix_due.retain(|id| accs[*id as usize].len != 0);
    }

    /// Makes room when the aggregates are full: at most once a second, the
    /// longest-idle sixteenth of those without traffic this second or the
    /// one before are forgotten (prefixes sprayed with forged records
    /// cannot lock out a real attack's). A free slot, if any.
    fn evict_prefixes(&mut self) -> Option<u32> {
        let second = self.second as u32;
        if self.prefix_evicted == second {
            return None;
        }
        self.prefix_evicted = second;
        let mut idle: Vec<(u32, u32)> = self
            .prefix_runs
            .iter()
            .zip(&self.prefixes)
            .enumerate()
            .filter(|(_, (r, a))| a.len != 0 && r.second.saturating_add(1) < second)
            .map(|(id, (r, _))| (r.second, id as u32))
            .collect();
        let n = (MAX_PREFIXES / 16).min(idle.len());
        if n == 0 {
            return None;
        }
        if n < idle.len() {
            idle.select_nth_unstable(n - 1);
        }
        for &(_, id) in &idle[..n] {
            let acc = std::mem::take(&mut self.prefixes[id as usize]);
            self.prefix_ids.remove(&(acc.group, acc.key));
            if std::mem::take(&mut self.prefix_runs[id as usize])
                .details
                .is_some()
            {
                self.prefix_detailed -= 1;
            }
            self.prefix_free.push(id);
        }
        self.stats.prefixes_evicted += n as u64;
        let accs = &self.prefixes;
        self.prefix_due.retain(|id| accs[*id as usize].len != 0);
        self.prefix_free.pop()
    }

    /// Gives busy prefix `idx` details: a free allowance, or those of the
    /// detailed prefix with the fewest samples this second when it has at
    /// most half as many (looked for at most every 50 ms).
    fn give_prefix_details(&mut self, idx: usize) {
        if self.prefix_detailed < MAX_PREFIX_DETAILED {
            self.prefix_runs[idx].details = Some(Box::default());
            self.prefix_detailed += 1;
            return;
        }
        if self.now_ms < self.prefix_steal_ms {
            return;
        }
        self.prefix_steal_ms = self.now_ms + 50;
        let second = self.second as u32;
        let runs = &self.prefix_runs;
        let weakest = self
            .prefix_dirty
            .iter()
            .map(|&id| id as usize)
            .filter(|&id| id != idx && runs[id].details.is_some() && runs[id].second == second)
            .min_by_key(|&id| runs[id].inbound.samples);
        let mine = runs[idx].inbound.samples;
        if let Some(victim) = weakest.filter(|&v| runs[v].inbound.samples.saturating_mul(2) <= mine)
        {
            let d = self.prefix_runs[victim].details.take();
            self.prefix_runs[idx].details = d.map(|mut d| {
                *d = Details::default();
                d
            });
            self.prefixes[victim].busy_top = SpaceSaving::default();
            self.stats.prefix_details_taken += 1;
        }
    }

    /// The prefix aggregate of a host (assigning one the first time), or
    /// none when its hostgroup has no prefix thresholds or the shard holds
    /// as many as it may.
    fn prefix_of(&mut self, host: &Addr, group: GroupId, limit: Option<PrefixLimit>) -> u32 {
        let Some(pl) = limit else { return 0 };
        let (key, len) = pl.of(host);
        if let Some(&id) = self.prefix_ids.get(&(group, key)) {
            return id + 1;
        }
        let acc = PrefixAcc {
            key,
            len,
            group,
            ..PrefixAcc::default()
        };
        let id = if let Some(id) = self.prefix_free.pop() {
            self.prefixes[id as usize] = acc;
            self.prefix_runs[id as usize] = PrefixRun::default();
            id
        } else if self.prefixes.len() < MAX_PREFIXES {
            self.prefixes.push(acc);
            self.prefix_runs.push(PrefixRun::default());
            self.prefixes.len() as u32 - 1
        } else if let Some(id) = self.evict_prefixes() {
            self.prefixes[id as usize] = acc;
            self.prefix_runs[id as usize] = PrefixRun::default();
            id
        } else {
            self.stats.prefixes_refused += 1;
            return 0;
        };
        self.prefix_ids.insert((group, key), id);
        id + 1
    }

    /// Adds an inbound record to its host's prefix aggregate: the counters
    /// on the aggregate's one line, and while the prefix is busy its
    /// details and busiest hosts. Hosts and the busiest of them over the
    /// whole second are summed at the second's end, once per host.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn account_prefix(
        &mut self,
        r: &Rec,
        id: u32,
        c: usize,
        packets: u64,
        bytes: u64,
        seen: u64,
        first_of_host: bool,
        pps_limit: Option<u64>,
        bps_limit: Option<u64>,
    ) {
        let second = self.second as u32;
        let now = self.now_ms;
        let detail_pps = self.bounds.detail_pps;
        let idx = id as usize - 1;
        let Some(run) = self.prefix_runs.get_mut(idx) else {
            return;
        };
        if run.second != second {
            let at = run.peek_at();
            run.second = second;
            run.inbound = Counters::default();
            run.hosts = 0;
            run.set_peek_at(at);
            self.prefix_dirty.push(idx as u32);
        }
        let held = r.marks & HELD != 0;
        let cnt = &mut run.inbound;
        let p32 = packets.min(u64::from(u32::MAX)) as u32;
        cnt.packets[class::ALL] = cnt.packets[class::ALL].saturating_add(p32);
        cnt.packets[c] = cnt.packets[c].saturating_add(p32);
        if c == class::TCP_SYN {
            cnt.packets[class::TCP] = cnt.packets[class::TCP].saturating_add(p32);
        }
        cnt.bytes = cnt.bytes.saturating_add(bytes);
        cnt.samples = cnt
            .samples
            .saturating_add(seen.min(u64::from(u32::MAX)) as u32);
        if !held {
            cnt.flows = cnt.flows.saturating_add(1);
        }
        run.hosts = run.hosts.saturating_add(u16::from(first_of_host));
        // Details once the prefix is busy enough to matter: past a quarter
        // of its limit (and past what gives a host details), on a few
        // packets really seen.
        if run.details.is_none()
            && cnt.samples >= PREFIX_MIN_SAMPLES
            && (u64::from(cnt.packets[class::ALL])
                >= pps_limit.map_or(detail_pps, |p| (p / 4).max(detail_pps))
                || bps_limit.is_some_and(|b| cnt.bytes.saturating_mul(8) >= b / 4))
        {
            self.give_prefix_details(idx);
        }
        let run = &mut self.prefix_runs[idx];
        if let Some(d) = run.details.as_mut() {
            if !held {
                d.add(r, c, packets, bytes);
            }
            self.prefixes[idx].busy_top.add(r.dst, packets);
        }
        // Busy enough to be looked at before the second ends? Checked at
        // most every PREFIX_CHECK_MS, as it reads the second before.
        if now >= run.peek_at() {
            let acc = &self.prefixes[idx];
            let back = 1000 - (now % 1000).min(999);
            let prev = if acc.prev_second + 1 == second {
                acc.prev
            } else {
                Counters::default()
            };
            let cnt = &run.inbound;
            let wp = u64::from(prev.packets[class::ALL]) * back / 1000
                + u64::from(cnt.packets[class::ALL]);
            let wb = (prev.bytes / 1000 * back)
                .saturating_add(cnt.bytes)
                .saturating_mul(8);
            let watch =
                pps_limit.is_some_and(|p| wp >= p / 8) || bps_limit.is_some_and(|b| wb >= b / 8);
            if watch {
                run.set_peek_at(now + PEEK_EVERY_MS);
                self.prefix_due.push(idx as u32);
            } else {
                run.set_peek_at(now + PREFIX_CHECK_MS);
            }
        }
    }

    /// Looks at the busy prefixes due a look (see [`PrefixPeek`]); call it
    /// as often as triggers are taken.
    pub fn take_prefix_peeks(&mut self) -> Vec<PrefixPeek> {
        if self.prefix_due.is_empty() {
            return Vec::new();
        }
        let now = self.now_ms;
        let back = 1000 - (now % 1000).min(999);
        let second = self.second as u32;
        let mut due = std::mem::take(&mut self.prefix_due);
        due.sort_unstable();
        due.dedup();
        let mut out = Vec::with_capacity(due.len());
        for id in due {
            let (Some(run), Some(acc)) = (
                self.prefix_runs.get(id as usize),
                self.prefixes.get(id as usize),
            ) else {
                continue;
            };
            let just_before = acc.prev_second + 1 == second;
            let mut window = if just_before {
                scaled(&acc.prev, back, 1000)
            } else {
                Counters::default()
            };
            let current = run.second == second;
            if current {
                add_counters(&mut window, &run.inbound);
            }
            // The busiest hosts over the same sliding second.
            let mut top: Vec<(Addr, u64)> = if just_before {
                acc.prev_top
                    .iter()
                    .map(|&(a, n)| (a, n / 1000 * back + n % 1000 * back / 1000))
                    .collect()
            } else {
                Vec::new()
            };
            if current {
                for (a, n) in acc.busy_top.top_sure() {
                    match top.iter_mut().find(|(b, _)| *b == a) {
                        Some(t) => t.1 = t.1.saturating_add(n),
                        None => top.push((a, n)),
                    }
                }
            }
            top.sort_by_key(|t| std::cmp::Reverse(t.1));
            let prev_hosts = if just_before { acc.prev_hosts } else { 0 };
            out.push(PrefixPeek {
                prefix: Addr(acc.key.to_be_bytes()),
                len: acc.len,
                group: acc.group,
                at_ms: now,
                second: self.second,
                window,
                hosts: if current {
                    u32::from(run.hosts).max(prev_hosts)
                } else {
                    prev_hosts
                },
                top_hosts: top,
                details: run.details.clone().filter(|_| current),
            });
        }
        out
    }

    /// Grows to a table twice the size. A large one is made ready on
    /// another thread first: mapping it and faulting its pages in costs
    /// about a millisecond per megabyte here, and a fresh table is touched
    /// all over at once (hosts hash everywhere), so doing that on the
    /// shard's thread stalled it for tens of milliseconds and overflowed
    /// its rings. Meanwhile the current table keeps filling (to 7/8 at
    /// most). A small one is made here at once: faulting it in is cheaper
    /// than handing work to a thread that may wait for a core, and a cold
    /// start doubles the table every few milliseconds.
    fn request_growth(&mut self) {
        if self.next.is_some() || self.old.is_some() {
            return;
        }
        let slots = self.table.slots.len() * 2;
        if slots * SLOT_BYTES < self.off_thread_bytes {
            self.start_growth(Table::with_capacity(slots / 2));
            return;
        }
        // Without a thread to be had, the table is made here when needed.
        self.next = std::thread::Builder::new()
            .name("levee-table".into())
            .spawn(move || Table::populated(slots))
            .ok();
    }

    /// Starts growing when the requested table is ready, or, when `now`,
    /// at once (waiting for it, or making one here).
    fn poll_growth(&mut self, now: bool) {
        let ready = self.next.as_ref().is_some_and(|h| h.is_finished());
        if !(ready || now) {
            return;
        }
        let slots = self.table.slots.len() * 2;
        let table = self
            .next
            .take()
            .and_then(|h| h.join().ok())
            .filter(|t| t.slots.len() == slots)
            .unwrap_or_else(|| Table::with_capacity(slots / 2));
        self.start_growth(table);
    }

    /// `table` (twice the size) takes over; hosts move to it over time. A
    /// migration still running is finished first.
    fn start_growth(&mut self, table: Table) {
        self.migrate(usize::MAX);
        let old = std::mem::replace(&mut self.table, table);
        self.old = Some(old);
        self.migrated = 0;
        self.evict_cursor = 0;
        for d in &mut self.dirty {
            *d |= OLD;
        }
    }

    /// Moves host `j` of the old table to slot `i` of the new one (found
    /// empty for its key), keeping it on the dirty list if it had traffic
    /// this second.
    fn move_over(&mut self, j: usize, i: usize) {
        let Some(old) = &mut self.old else { return };
        let slot = old.slots[j];
        old.slots[j].flags_flows |= MOVED;
        old.len -= 1;
        self.table.slots[i] = slot;
        self.table.cold[i] = std::mem::take(&mut old.cold[j]);
        self.table.len += 1;
        let second = self.second as u32;
        if slot.second == second || self.table.cold[i].out_second == second {
            self.dirty.push(i as u32);
        }
    }

    /// Migrates up to `n` old slots; drops the old table when done.
    fn migrate(&mut self, n: usize) {
        let Some(old) = &self.old else { return };
        let end = self.migrated.saturating_add(n).min(old.slots.len());
        for j in self.migrated..end {
            let Some(old) = &self.old else { return };
            let s = &old.slots[j];
            if !s.occupied() || s.flags_flows & MOVED != 0 {
                continue;
            }
            let (i, _) = self.table.find(s.key);
            self.move_over(j, i);
        }
        self.migrated = end;
        if self.old.as_ref().is_some_and(|o| end == o.slots.len()) {
            if let Some(old) = self.old.take() {
                retire(old);
            }
            self.dirty.retain(|d| d & OLD == 0);
        }
    }

    /// The slot of `key` in the current table — moved across first if it
    /// was still in the old one — or the empty slot where it would go.
    #[inline]
    fn locate(&mut self, key: u128) -> (usize, bool) {
        let (i, found) = self.table.find(key);
        if found {
            return (i, true);
        }
        match self.old.as_ref().and_then(|o| o.find_live(key)) {
            Some(j) => {
                self.move_over(j, i);
                (i, true)
            }
            None => (i, false),
        }
    }

    /// Waits for a table being made on another thread, and starts growing
    /// with it: tests (and measurements) that need growth at a known point.
    pub fn settle(&mut self) {
        while self.next.as_ref().is_some_and(|h| !h.is_finished()) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.poll_growth(false);
    }

    /// Checks both tables' invariants (tests).
    #[cfg(test)]
    fn check(&self) -> Result<(), String> {
        self.table.check()?;
        if let Some(old) = &self.old {
            old.check()?;
            for s in old
                .slots
                .iter()
                .filter(|s| s.occupied() && s.flags_flows & MOVED == 0)
            {
                if self.table.find(s.key).1 {
                    return Err("a host in both tables".into());
                }
            }
        }
        Ok(())
    }

    /// Forgets hosts idle longer than `idle_s`, a share of the table per
    /// second: all of a small table, a tenth of a large one (so a host may
    /// stay up to ten seconds longer than `idle_s`).
    fn evict(&mut self, second: u64) {
        let cap = self.table.slots.len();
        let budget = (cap / 10).max(4096).min(cap);
        let mut seen = 0;
        while seen < budget {
            if self.evict_cursor >= cap {
                self.evict_cursor = 0;
            }
            let i = self.evict_cursor;
            let s = &self.table.slots[i];
            let c = &self.table.cold[i];
            let last = u64::from(s.second.max(c.out_second));
            if s.occupied() && last + self.bounds.idle_s < second {
                let gone = self.table.remove(i);
                if gone.details.is_some() {
                    self.detailed -= 1;
                }
                self.stats.evicted += 1;
                // The slot may hold a shifted-back host now: look again.
            } else {
                self.evict_cursor += 1;
                seen += 1;
            }
        }
    }

    /// A full table makes room for a new host by forgetting one that has
    /// been silent for a few seconds (looked for from the eviction cursor,
    /// a bounded number of slots): a spray of addresses that each got a
    /// packet fills the table once, and must not shut out the next victim
    /// until `idle_s` has passed.
    fn make_room(&mut self, second: u32) -> bool {
        if self.old.is_some() {
            return false; // while hosts move across, keep it simple: refuse
        }
        let cap = self.table.slots.len();
        for _ in 0..ROOM_SCAN.min(cap) {
            if self.evict_cursor >= cap {
                self.evict_cursor = 0;
            }
            let i = self.evict_cursor;
            self.evict_cursor += 1;
            let s = &self.table.slots[i];
            let c = &self.table.cold[i];
            let last = s.second.max(c.out_second);
            if s.occupied() && s.flags_flows & DETAILED == 0 && last + ROOM_SILENT_S < second {
                self.table.remove(i);
                // Removal shifts the rest of the probe chain back: hosts
                // active this second may now sit where the dirty list
                // does not point. Point at them again (finish_second drops
                // duplicates and quiet slots).
                let mut k = i;
                while self.table.slots[k].occupied() {
                    let (s, c) = (&self.table.slots[k], &self.table.cold[k]);
                    if s.second == second || c.out_second == second {
                        self.dirty.push(k as u32);
                    }
                    k = (k + 1) & self.table.mask;
                }
                self.stats.evicted += 1;
                self.stats.made_room += 1;
                return true;
            }
        }
        false
    }

    /// Triggers raised since the last call.
    pub fn take_triggers(&mut self) -> Vec<Trigger> {
        std::mem::take(&mut self.triggers)
    }

    /// Copies of the current second's details of the hosts watched since
    /// their trigger, those due now (at once after the trigger, then every
    /// [`PEEK_EVERY_MS`] for [`PEEK_FOR_MS`]). Cheap when nothing is
    /// watched; call it as often as triggers are taken.
    pub fn take_peeks(&mut self) -> Vec<Peek> {
        if self.watched.is_empty() {
            return Vec::new();
        }
        let now = self.now_ms;
        let mut out = Vec::new();
        let mut watched = std::mem::take(&mut self.watched);
        watched.retain_mut(|w| {
            if now < w.next_ms {
                return true;
            }
            let (i, found) = self.locate(w.key);
            if found && self.table.slots[i].flags_flows & DETAILED != 0 {
                if let Some(d) = self.table.cold[i].details.as_deref() {
                    if d.records > 0 {
                        out.push(Peek {
                            addr: Addr(w.key.to_be_bytes()),
                            group: w.group,
                            second: self.second,
                            details: Box::new(d.clone()),
                        });
                    }
                }
            }
            w.next_ms = now + PEEK_EVERY_MS;
            now < w.until_ms
        });
        self.watched = watched;
        out
    }

    /// Accounts a batch of records, fetching what each will touch ahead,
    /// in two stages: first its slot and cold state, then (those being
    /// in cache by then) the lines of its details it will update. A busy
    /// host's details are a pointer away from its cold state; fetched only
    /// when needed they cost a chain of cache misses per record.
    pub fn account_batch<'a>(&mut self, items: impl IntoIterator<Item = &'a Rec>) {
        let mut chunk: [Option<&Rec>; CHUNK] = [None; CHUNK];
        let mut n = 0;
        for r in items {
            chunk[n] = Some(r);
            n += 1;
            if n == CHUNK {
                self.account_chunk(&chunk);
                n = 0;
            }
        }
        self.account_chunk(&chunk[..n]);
    }

    fn account_chunk(&mut self, chunk: &[Option<&Rec>]) {
        let n = chunk.len();
        let home = |t: &Table, r: &Rec| t.home(u128::from_be_bytes(r.host().0));
        // The records themselves come from a ring another core just wrote.
        for r in chunk.iter().take(AHEAD).flatten() {
            prefetch(*r);
        }
        for j in 0..n + 2 * AHEAD {
            if let Some(Some(r)) = chunk.get(j + AHEAD) {
                prefetch(*r);
            }
            if let Some(Some(r)) = chunk.get(j) {
                let h = home(&self.table, r);
                prefetch(&self.table.slots[h]);
                // A `Cold` is 56 bytes: most straddle two lines.
                let cold = (&raw const self.table.cold[h]).cast::<u8>();
                prefetch(cold);
                prefetch(cold.wrapping_add(std::mem::size_of::<Cold>() - 1));
            }
            if let Some(Some(r)) = j.checked_sub(AHEAD).and_then(|k| chunk.get(k)) {
                let h = home(&self.table, r);
                if let Some(id) = self.table.cold[h].prefix.checked_sub(1) {
                    if let Some(run) = self.prefix_runs.get(id as usize) {
                        prefetch(run);
                    }
                }
                if let Some(d) = self.table.cold[h].details.as_deref() {
                    if !r.outbound() {
                        d.prefetch(r);
                    }
                }
            }
            if let Some(Some(r)) = j.checked_sub(2 * AHEAD).and_then(|k| chunk.get(k)) {
                self.account(r);
            }
        }
    }

    /// Accounts one record for its host (the destination, or the source
    /// when outbound).
    #[inline]
    pub fn account(&mut self, r: &Rec) {
        let host = r.host();
        let group = r.group;
        let outbound = r.outbound();
        let key = u128::from_be_bytes(host.0);
        let (mut i, found) = self.locate(key);
        let second = self.second as u32;
        if !found {
            if self.hosts() >= self.bounds.max_hosts && !self.make_room(second) {
                self.stats.refused += 1;
                return;
            }
            if self.old.is_some() {
                self.migrate(MIGRATE_PER_INSERT);
            } else if self.next.is_some() {
                self.poll_growth(false);
            } else if self.table.len * 2 > self.table.slots.len() {
                // Filling fast within a second: have the next table made.
                self.request_growth();
            }
            if (self.table.len + 1) * 8 > self.table.slots.len() * 7 {
                // Filling faster than the next table could be made: grow
                // now, with it if it is ready.
                self.poll_growth(true);
            }
            i = self.table.find(key).0;
            self.table.slots[i] = Slot {
                key,
                second,
                flags_flows: OCCUPIED,
                ..Slot::default()
            };
            self.table.cold[i] = Cold {
                group,
                out_second: if outbound { second } else { 0 },
                ..Cold::default()
            };
            self.table.len += 1;
            self.dirty.push(i as u32);
        }
        // Each side's first record of the second puts the slot on the dirty
        // list (twice at most; `finish_second` removes duplicates).
        let slot = &mut self.table.slots[i];
        let fresh = found && slot.second != second;
        let consecutive = slot.second + 1 == second;
        slot.roll(second);
        let cold = &mut self.table.cold[i];
        if fresh {
            cold.prev_samples = if consecutive { cold.samples } else { 0 };
            cold.samples = 0;
        }
        // A flow that lasted D seconds adds its per-second rate: outbound
        // once; inbound now and, held by the shard, in each of the D − 1
        // seconds that follow (its total exact: the remainder now), so a
        // flood carried in long-lived flows reported once per active
        // timeout reads at its rate, not at 1/D of it.
        let (packets, bytes) = match u64::from(r.duration_s).min(MAX_HOLD_S) {
            0 | 1 => (r.packets, r.bytes),
            d if outbound => (r.packets.div_ceil(d), r.bytes.div_ceil(d)),
            d => {
                let (pps, bps) = (r.packets / d, r.bytes / d);
                if self.held.len() < MAX_HELD && pps > 0 {
                    let mut h = *r;
                    h.packets = pps;
                    h.bytes = bps;
                    h.duration_s = 0;
                    h.marks |= HELD;
                    self.held.push((h, second + (d - 1) as u32));
                    (r.packets - pps * (d - 1), r.bytes - bps * (d - 1))
                } else {
                    self.stats.held_refused += 1;
                    (r.packets, r.bytes)
                }
            }
        };
        if outbound {
            if cold.out_second != second {
                cold.out_second = second;
                cold.outbound = Outbound::default();
                cold.group = group;
                self.dirty.push(i as u32);
            }
            cold.outbound.packets += packets;
            cold.outbound.bytes += bytes;
            cold.outbound.flows += 1;
            return;
        }
        if fresh {
            // Once a second per host: the dirty list, and the hostgroup
            // again (a reload may have moved the host).
            cold.group = group;
            self.dirty.push(i as u32);
        }
        let seen = (packets / u64::from(r.sampling.max(1))).max(1);
        cold.samples = cold
            .samples
            .saturating_add(seen.min(u64::from(u32::MAX)) as u32);
        let window_samples = u64::from(cold.prev_samples) * (1000 - (self.now_ms % 1000).min(999))
            / 1000
            + u64::from(cold.samples);

        let c = class_of(r);
        let sc = slot_class(c);
        let first_of_host = slot.all_packets() == 0;
        slot.packets[sc] = slot.packets[sc].saturating_add(packets.min(u64::from(u32::MAX)) as u32);
        slot.bytes = slot.bytes.saturating_add(bytes);
        let held = r.marks & HELD != 0;
        if slot.flags_flows & FLOWS != FLOWS && !held {
            slot.flags_flows += 1;
        }
        let (wp, wb) = slot.window(self.now_ms % 1000);
        let mut steal = None;

        // Details need evidence as well as a rate: under sampled export one
        // sample already stands for a thousand packets, and details built
        // from a sample or two a second would describe nothing.
        if slot.flags_flows & (DETAILED | REFUSED) == 0
            && wp >= self.bounds.detail_pps
            && slot.flags_flows & FLOWS >= DETAIL_RECORDS
        {
            if self.detailed < self.bounds.max_detailed {
                slot.flags_flows |= DETAILED;
                cold.details = Some(Box::default());
                self.detailed += 1;
                self.pool.push(key);
            } else {
                slot.flags_flows |= REFUSED;
                match self.weakest.last() {
                    // Far busier than the quietest host holding details
                    // (whose share of a full pool must not shut out the
                    // target of an attack): take them over, below.
                    Some(&(pps, victim)) if wp > pps.saturating_mul(REPLACE_FACTOR) => {
                        self.weakest.pop();
                        steal = Some(victim);
                    }
                    _ => self.stats.details_refused += 1,
                }
            }
        }
        if slot.flags_flows & DETAILED != 0 {
            cold.group = group;
            if let Some(d) = cold.details.as_mut().filter(|_| !held) {
                d.add(r, c, packets, bytes);
            }
            if wp >= self.bounds.detail_pps {
                cold.hot_until = second + 10;
            }
        }
        let limit = self
            .limits
            .get(usize::from(group))
            .copied()
            .unwrap_or_default();
        // Over only when the estimate clears the limit by more than its
        // sampling noise: at 1:1000 two samples a third of a second apart
        // "are" 5,000 pps, and mean nothing.
        let n = window_samples as f64;
        let per = wp as f64 / n.max(1.0);
        let over = limit
            .pps
            .is_some_and(|p| significant(wp as f64, n, per, p as f64))
            || limit
                .bps
                .is_some_and(|b| significant((wb * 8) as f64, n, per, b as f64));
        if over && slot.flags_flows & OVER == 0 {
            slot.flags_flows |= OVER;
            self.triggers.push(Trigger {
                addr: host,
                group,
                at_ms: self.now_ms,
                pps: wp,
                bps: wb * 8,
                samples: window_samples,
            });
            if self.watched.len() < MAX_WATCHED && !self.watched.iter().any(|w| w.key == key) {
                self.watched.push(Watch {
                    key,
                    group,
                    next_ms: self.now_ms,
                    until_ms: self.now_ms + PEEK_FOR_MS,
                });
            }
        } else if !over && slot.flags_flows & OVER != 0 {
            slot.flags_flows &= !OVER; // re-armed below the threshold
        }
        if let Some(victim) = steal {
            self.take_details(victim, i, key);
        }
        if limit.prefix.is_some() {
            let mut id = self.table.cold[i].prefix;
            if id == 0 || first_of_host {
                // Once a second per host: a reload may have moved it, room
                // may have been made.
                id = self.prefix_of(&host, group, limit.prefix);
                if id == 0 {
                    id = NO_PREFIX;
                }
                self.table.cold[i].prefix = id;
            }
            if id != NO_PREFIX {
                let (pps, bps) = limit.prefix.map_or((None, None), |p| (p.pps, p.bps));
                self.account_prefix(r, id, c, packets, bytes, seen, first_of_host, pps, bps);
            }
        }
    }

    /// Gives host `key` (at slot `i`) the details of `victim`, which was
    /// the quietest holder at the last second's end; it is refused details
    /// for the rest of this second. If the victim has let go of them since,
    /// the place it left is used.
    fn take_details(&mut self, victim: u128, i: usize, key: u128) {
        let (j, found) = self.locate(victim);
        let taken = if found && self.table.slots[j].flags_flows & DETAILED != 0 {
            self.table.slots[j].flags_flows &= !DETAILED;
            self.table.slots[j].flags_flows |= REFUSED;
            self.table.cold[j].details.take()
        } else {
            None
        };
        let details = match taken {
            Some(mut d) => {
                *d = Details::default();
                d
            }
            None if self.detailed < self.bounds.max_detailed => {
                self.detailed += 1;
                Box::default()
            }
            None => {
                self.stats.details_refused += 1;
                return;
            }
        };
        self.stats.details_replaced += 1;
        let second = self.second as u32;
        let slot = &mut self.table.slots[i];
        slot.flags_flows = (slot.flags_flows & !REFUSED) | DETAILED;
        let cold = &mut self.table.cold[i];
        cold.details = Some(details);
        cold.hot_until = second + 10;
        self.pool.push(key);
    }

    /// Once a second: lets go of the details of hosts that have been quiet
    /// (or silent: they are not on the dirty list) for ten seconds, and
    /// ranks the holders by their last second, the quietest last.
    fn sweep_details(&mut self, second: u32) {
        let mut pool = std::mem::take(&mut self.pool);
        pool.sort_unstable();
        pool.dedup();
        let mut ranked = Vec::with_capacity(pool.len());
        pool.retain(|&key| {
            let (i, found) = self.locate(key);
            if !found || self.table.slots[i].flags_flows & DETAILED == 0 {
                return false;
            }
            if self.table.cold[i].hot_until < second {
                self.table.slots[i].flags_flows &= !DETAILED;
                self.table.cold[i].details = None;
                self.detailed -= 1;
                return false;
            }
            let s = &self.table.slots[i];
            let pps = if s.second == second {
                s.all_packets()
            } else {
                0
            };
            ranked.push((pps, key));
            true
        });
        self.pool = pool;
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        let keep = ranked.len().min(WEAKEST);
        self.weakest = ranked.split_off(ranked.len() - keep);
    }
}

/// Slots a full table looks through for a silent host to forget.
const ROOM_SCAN: usize = 256;
/// Seconds a host must have been silent to be forgotten for a new one.
const ROOM_SILENT_S: u32 = 3;

/// A host takes details from a holder this many times quieter.
const REPLACE_FACTOR: u64 = 4;
/// Holders ranked for replacement each second.
const WEAKEST: usize = 64;

#[cfg(test)]
mod tests;
