//! sFlow version 5 (IN-1), per sflow_version_5.txt (sflow.org, 2004).
//!
//! Decodes flow samples (format 1) and expanded flow samples (format 3) into
//! one [`FlowRecord`] each, from the raw packet header record (format 1,
//! parsed to L4 by [`crate::packet`]) or, when there is none, the sampled
//! IPv4/IPv6 record (formats 3/4). Counts are multiplied by the sample's
//! sampling rate; bytes are the IP length from the header, not the frame
//! length. Counter samples (formats 2 and 4) update the generic interface
//! counters (record format 1) kept per agent and interface in [`State`].
//! Datagram sequence numbers are tracked per agent and sub-agent for loss.
//!
//! The XDR walk trusts no length or count: every loop is bounded by the bytes
//! that are really there, and a sample or record whose length runs past its
//! container ends the datagram with an error. The records of the samples
//! before it stay; the malformed sample itself gives none, even when its raw
//! header had parsed (a sample whose structure lies is not counted on).

use std::collections::HashMap;

use crate::error::{DecodeError, ErrorKind, Protocol};
use crate::packet;
use crate::record::{flags, Addr, FlowRecord};
use crate::{Datagram, Tally};

const P: Protocol = Protocol::Sflow;

/// Agents (agent address, sub-agent) tracked per exporter for sequence loss.
const MAX_AGENTS: usize = 64;
/// Interfaces whose counters are kept per exporter.
const MAX_INTERFACES: usize = 8192;

/// Generic interface counters (counter record format 1), as last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IfCounters {
    pub if_type: u32,
    pub speed: u64,
    pub in_octets: u64,
    pub in_packets: u64,
    pub out_octets: u64,
    pub out_packets: u64,
    pub in_discards: u32,
    pub in_errors: u32,
    pub out_discards: u32,
    pub out_errors: u32,
    /// When this report arrived (Unix ms).
    pub at_ms: u64,
}

/// Sample pools tracked per exporter (agent, source).
const MAX_POOLS: usize = 1024;
/// Implausible samples in a row after which a source's pool is taken as
/// the new baseline (its first sample may have been the forged one).
const REBASE_AFTER: u8 = 8;

/// A source's last flow sample: sequence number and sample pool.
#[derive(Debug, Clone, Copy)]
struct Pool {
    agent: Addr,
    source: u32,
    seq: u32,
    pool: u32,
    /// Implausible samples since the last plausible one.
    strikes: u8,
}

/// What sFlow decoding remembers about one exporter.
#[derive(Debug, Default)]
pub struct State {
    /// (agent, sub-agent) → last datagram sequence number.
    seqs: Vec<(Addr, u32, u32)>,
    /// Per (agent, source): the last plausible sample's sequence and pool.
    pools: Vec<Pool>,
    /// (agent, ifIndex) → counters.
    interfaces: HashMap<(Addr, u32), IfCounters>,
    /// Counter reports refused because [`MAX_INTERFACES`] was reached.
    pub interfaces_refused: u64,
}

impl State {
    pub fn interface(&self, agent: Addr, if_index: u32) -> Option<&IfCounters> {
        self.interfaces.get(&(agent, if_index))
    }

    pub fn interfaces(&self) -> impl Iterator<Item = (&(Addr, u32), &IfCounters)> {
        self.interfaces.iter()
    }

    /// Whether a flow sample's sequence number and sample pool move with
    /// the source's earlier ones: the pool counts every packet the source
    /// saw, so as the sequence moves forward it never runs backwards and
    /// grows by about the sampling rate per sample (agents update it
    /// lazily, so it may also stand still) — a forged datagram rarely
    /// knows where a real source's counters stand.
    /// A source's first sample, a restart (the sequence going back) and a
    /// source past [`MAX_POOLS`] are taken as they come.
    fn plausible(&mut self, agent: &Addr, source: u32, seq: u32, pool: u32, rate: u32) -> bool {
        let Some(p) = self
            .pools
            .iter_mut()
            .find(|p| p.source == source && p.agent == *agent)
        else {
            if self.pools.len() < MAX_POOLS {
                self.pools.push(Pool {
                    agent: *agent,
                    source,
                    seq,
                    pool,
                    strikes: 0,
                });
            }
            return true;
        };
        let ds = seq.wrapping_sub(p.seq);
        let dp = pool.wrapping_sub(p.pool);
        let ok = if ds == 0 || ds >= 1 << 31 {
            true // a repeat, a reordered sample or a restart
        } else {
            // Agents update the pool lazily (a real one repeats it across
            // consecutive samples), so it may stand still; it may not run
            // backwards, nor far ahead of what the samples can account for.
            let rate = u64::from(rate.max(1));
            let most = u64::from(ds) * rate * 64 + rate * 1024;
            dp < 1 << 31 && u64::from(dp) <= most
        };
        if ok || p.strikes + 1 >= REBASE_AFTER {
            *p = Pool {
                agent: *agent,
                source,
                seq,
                pool,
                strikes: 0,
            };
        } else {
            p.strikes += 1;
        }
        ok
    }

    /// Records a datagram sequence number; returns how many datagrams were lost.
    fn track(&mut self, agent: &Addr, sub_agent: u32, seq: u32) -> u64 {
        if let Some(entry) = self
            .seqs
            .iter_mut()
            .find(|(a, s, _)| a == agent && *s == sub_agent)
        {
            let gap = seq.wrapping_sub(entry.2);
            entry.2 = seq;
            // Forward by less than half the space: loss. Anything else is a
            // restart (sequence back to 1) or a reordered datagram.
            return if gap > 1 && gap < 1 << 31 {
                u64::from(gap - 1)
            } else {
                0
            };
        }
        if self.seqs.len() < MAX_AGENTS {
            self.seqs.push((*agent, sub_agent, seq));
        }
        0
    }
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

#[inline]
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    Some(u64::from_be_bytes([
        s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
    ]))
}

fn err(kind: ErrorKind, offset: usize, what: &'static str) -> DecodeError {
    DecodeError::new(P, kind, offset, what)
}

/// What the errors of one kind of XDR block list call things.
struct Blocks {
    /// The container ends before the count of blocks it claims.
    missing: &'static str,
    /// A block's format and length words are cut off.
    header: &'static str,
    /// A block's length runs past its container.
    overrun: &'static str,
}

const SAMPLES: Blocks = Blocks {
    missing: "fewer samples than the header counts",
    header: "sample format and length",
    overrun: "sample length runs past the datagram",
};
const FLOW_RECORDS: Blocks = Blocks {
    missing: "fewer flow records than the sample counts",
    header: "flow record format and length",
    overrun: "flow record length runs past the sample",
};
const COUNTER_RECORDS: Blocks = Blocks {
    missing: "fewer counter records than the sample counts",
    header: "counter record format and length",
    overrun: "counter record length runs past the sample",
};

/// The XDR block (format, length, body) at `at` of `b`: its format, its
/// body and where the next one starts. `base` is `b`'s offset in the
/// datagram, for errors.
#[inline(always)]
fn block<'a>(
    b: &'a [u8],
    at: usize,
    base: usize,
    names: &Blocks,
) -> Result<(u32, &'a [u8], usize), DecodeError> {
    let Some(h) = b.get(at..at + 8) else {
        return Err(if at >= b.len() {
            err(ErrorKind::BadCount, base + at, names.missing)
        } else {
            err(ErrorKind::Truncated, base + at, names.header)
        });
    };
    let format = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let start = at + 8;
    let end = start.saturating_add(len);
    let body = b
        .get(start..end)
        .ok_or_else(|| err(ErrorKind::BadLength, base + at + 4, names.overrun))?;
    Ok((format, body, end))
}

/// Whether `data` looks like sFlow v5 (version 5 as a 32-bit word).
pub fn sniff(data: &[u8]) -> bool {
    u32_at(data, 0) == Some(5)
}

/// Decodes one sFlow v5 datagram, appending a record per usable flow sample.
pub fn decode(
    dg: &Datagram<'_>,
    state: &mut State,
    out: &mut Vec<FlowRecord>,
    tally: &mut Tally,
) -> Result<(), DecodeError> {
    let b = dg.data;
    let version = u32_at(b, 0).ok_or(err(ErrorKind::Truncated, 0, "datagram header"))?;
    if version != 5 {
        return Err(err(ErrorKind::BadVersion, 0, "not sFlow version 5"));
    }
    let addr_type = u32_at(b, 4).ok_or(err(ErrorKind::Truncated, 4, "agent address type"))?;
    let (agent, mut at) = match addr_type {
        1 => {
            let a = b
                .get(8..12)
                .ok_or(err(ErrorKind::Truncated, 8, "agent address"))?;
            (
                Addr::from_v4_bits(u32::from_be_bytes([a[0], a[1], a[2], a[3]])),
                12,
            )
        }
        2 => {
            let a = b
                .get(8..24)
                .ok_or(err(ErrorKind::Truncated, 8, "agent address"))?;
            let mut o = [0u8; 16];
            o.copy_from_slice(a);
            (Addr::v6(o), 24)
        }
        _ => {
            return Err(err(
                ErrorKind::BadValue,
                4,
                "agent address type is neither IPv4 nor IPv6",
            ))
        }
    };
    let sub_agent = u32_at(b, at).ok_or(err(ErrorKind::Truncated, at, "sub-agent id"))?;
    let seq = u32_at(b, at + 4).ok_or(err(ErrorKind::Truncated, at + 4, "sequence number"))?;
    // at + 8: uptime (unused: samples carry no time of their own)
    let n_samples = u32_at(b, at + 12).ok_or(err(ErrorKind::Truncated, at + 12, "sample count"))?;
    at += 16;
    tally.lost += state.track(&agent, sub_agent, seq);

    let mut seen = 0u32;
    while seen < n_samples {
        let (format, body, next) = block(b, at, 0, &SAMPLES)?;
        let start = at + 8;
        match format {
            1 | 3 => {
                let before = out.len();
                flow_sample(body, start, format == 3, &agent, dg.received_ms, out, tally)?;
                // Compact: seq, source_id, rate, pool; expanded: seq, source
                // type, source index, rate, pool.
                let w = |i: usize| u32_at(body, i * 4).unwrap_or(0);
                let (seq, source, rate, pool) = if format == 3 {
                    (w(0), (w(1) << 24) | (w(2) & 0x00ff_ffff), w(3), w(4))
                } else {
                    (w(0), w(1), w(2), w(3))
                };
                if out.len() > before && !state.plausible(&agent, source, seq, pool, rate) {
                    tally.errors[ErrorKind::ImplausibleCounters.index()] += 1;
                    for r in &mut out[before..] {
                        r.flags |= flags::UNTRUSTED;
                    }
                }
            }
            2 => counter_sample(body, start, false, agent, dg.received_ms, state)?,
            4 => counter_sample(body, start, true, agent, dg.received_ms, state)?,
            _ => {} // enterprise or unknown formats: skipped by length
        }
        at = next;
        seen += 1;
    }
    Ok(())
}

/// The interface value of a (compact) flow sample's input/output field:
/// format 0 is an ifIndex, format 1 a discard reason, 2 a count of several.
#[inline]
fn if_index(format: u32, value: u32) -> u32 {
    // 0x3fffffff is "unknown" in the compact encoding.
    if format == 0 && value != 0x3fff_ffff {
        value
    } else {
        0
    }
}

/// `agent` is by reference: a by-value `Addr` is copied to the stack for
/// each call and read back at once in one load wider than the stores that
/// wrote it, which waits for them to retire (a third of the sample's time).
fn flow_sample(
    s: &[u8],
    base: usize,
    expanded: bool,
    agent: &Addr,
    now_ms: u64,
    out: &mut Vec<FlowRecord>,
    tally: &mut Tally,
) -> Result<(), DecodeError> {
    // Compact: seq, source_id, rate, pool, drops, input, output, n_records (32 bytes).
    // Expanded: seq, src type, src index, rate, pool, drops, in fmt, in val, out fmt, out val, n (44).
    let (hdr, rate, drops, in_if, out_if) = if expanded {
        if s.len() < 44 {
            return Err(err(
                ErrorKind::Truncated,
                base,
                "expanded flow sample header",
            ));
        }
        let w = |i: usize| u32_at(s, i * 4).unwrap_or(0);
        (44, w(3), w(5), if_index(w(6), w(7)), if_index(w(8), w(9)))
    } else {
        if s.len() < 32 {
            return Err(err(ErrorKind::Truncated, base, "flow sample header"));
        }
        let w = |i: usize| u32_at(s, i * 4).unwrap_or(0);
        (
            32,
            w(2),
            w(4),
            if_index(w(5) >> 30, w(5) & 0x3fff_ffff),
            if_index(w(6) >> 30, w(6) & 0x3fff_ffff),
        )
    };
    let n_records = u32_at(s, hdr - 4).unwrap_or(0);
    tally.exporter_drops += u64::from(drops);
    if rate == 0 {
        // Counted, and the sample skipped: an estimate times zero is no estimate.
        tally.errors[ErrorKind::ZeroSampling.index()] += 1;
        return Ok(());
    }
    // A flow sample counts as a decoded record even when its packet is not
    // IP (ARP, LLDP): levee_records_total counts samples for sFlow.
    tally.records += 1;

    // The sample's record is written in place in `out` and the packet
    // parsed straight into it (see `packet::parse_into`); it is taken back
    // when the sample yields no IP packet or turns out malformed.
    let rate64 = u64::from(rate);
    out.push(FlowRecord {
        time_ms: now_ms,
        packets: rate64,
        exporter: *agent,
        sampling: rate,
        in_if,
        out_if,
        ..FlowRecord::default()
    });
    let slot = out.len() - 1;
    match sample_records(&s[hdr..], base + hdr, n_records, &mut out[slot], tally) {
        Ok(true) => out[slot].bytes *= rate64,
        Ok(false) => {
            out.pop();
        }
        Err(e) => {
            out.pop();
            return Err(e);
        }
    }
    Ok(())
}

/// Walks a flow sample's records and fills `r` from the first raw packet
/// header that parses as IP or, when there is none, from the sampled
/// IPv4/IPv6 record (the raw header is the better source: it has the TTL and
/// fragment state). Returns whether `r` was filled; `r.bytes` is then the
/// sampled packet's IP length.
fn sample_records(
    s: &[u8],
    base: usize,
    n_records: u32,
    r: &mut FlowRecord,
    tally: &mut Tally,
) -> Result<bool, DecodeError> {
    let mut filled = false;
    let mut fallback: Option<(u32, &[u8])> = None;
    let mut at = 0;
    let mut seen = 0u32;
    while seen < n_records {
        let (format, rec, next) = block(s, at, base, &FLOW_RECORDS)?;
        let start = at + 8;
        match format {
            1 => {
                // Raw packet header: protocol, frame length, stripped, header length, header.
                let proto = u32_at(rec, 0).ok_or(err(
                    ErrorKind::Truncated,
                    base + start,
                    "raw header record",
                ))?;
                let hlen = u32_at(rec, 12).ok_or(err(
                    ErrorKind::Truncated,
                    base + start + 12,
                    "raw header length",
                ))? as usize;
                let header = rec.get(16..16usize.saturating_add(hlen)).ok_or(err(
                    ErrorKind::BadLength,
                    base + start + 12,
                    "raw header length runs past its record",
                ))?;
                // A second raw header (rare) is parsed only to be counted.
                let mut spare;
                let into = if filled {
                    spare = FlowRecord::default();
                    &mut spare
                } else {
                    &mut *r
                };
                // One call per header protocol, so each is a direct call.
                use packet::LinkType::{Ethernet, Ipv4, Ipv6};
                let parsed = match proto {
                    1 => packet::parse_into(Ethernet, header, into).map(drop),
                    11 => packet::parse_into(Ipv4, header, into).map(drop),
                    12 => packet::parse_into(Ipv6, header, into).map(drop),
                    _ => Err(packet::PacketError::NotIp(0)),
                };
                match parsed {
                    Ok(()) => filled = true,
                    Err(packet::PacketError::NotIp(_)) => tally.non_ip += 1,
                    Err(_) => tally.errors[ErrorKind::BadPacket.index()] += 1,
                }
            }
            // Kept only when whole: a cut-off one must not stand in the way
            // of a later good one.
            3 | 4 if fallback.is_none() && rec.len() >= sampled_len(format == 4) => {
                fallback = Some((format, rec))
            }
            _ => {} // Ethernet frame data, extended switch/router/gateway, …: not needed here
        }
        at = next;
        seen += 1;
    }
    Ok(filled || fallback.is_some_and(|(format, rec)| sampled(rec, format == 4, r).is_some()))
}

/// The bytes of a sampled IPv4 (format 3) or IPv6 (format 4) record that
/// levee reads: length, protocol, two addresses, two ports, TCP flags.
const fn sampled_len(v6: bool) -> usize {
    8 + 2 * if v6 { 16 } else { 4 } + 12
}

/// Sampled IPv4 (flow record format 3) or IPv6 (format 4): length, protocol,
/// src, dst, ports, tcp flags, then tos or priority. `None` (and `r`
/// untouched) when the record is too short. The length is the whole IP
/// packet, matching IP-layer bytes elsewhere.
fn sampled(rec: &[u8], v6: bool, r: &mut FlowRecord) -> Option<()> {
    let at = 8 + 2 * if v6 { 16 } else { 4 }; // after the addresses
    if rec.len() < sampled_len(v6) {
        return None;
    }
    let addr = |b: &[u8]| match <[u8; 16]>::try_from(b) {
        Ok(v6) => Addr::v6(v6),
        Err(_) => Addr::v4([b[0], b[1], b[2], b[3]]),
    };
    let (src, dst) = rec[8..at].split_at((at - 8) / 2);
    *r = FlowRecord {
        bytes: u64::from(u32_at(rec, 0)?),
        protocol: u32_at(rec, 4)? as u8,
        src: addr(src),
        dst: addr(dst),
        src_port: u32_at(rec, at)? as u16,
        dst_port: u32_at(rec, at + 4)? as u16,
        tcp_flags: u32_at(rec, at + 8)? as u8,
        ttl: 0,
        icmp_type: 0,
        icmp_code: 0,
        flags: if v6 { flags::IPV6 } else { 0 },
        ..*r
    };
    Some(())
}

fn counter_sample(
    s: &[u8],
    base: usize,
    expanded: bool,
    agent: Addr,
    now_ms: u64,
    state: &mut State,
) -> Result<(), DecodeError> {
    // Compact: seq, source_id, n (12 bytes); expanded: seq, type, index, n (16).
    let hdr = if expanded { 16 } else { 12 };
    let n_records =
        u32_at(s, hdr - 4).ok_or(err(ErrorKind::Truncated, base, "counter sample header"))?;
    let mut at = hdr;
    let mut seen = 0u32;
    while seen < n_records {
        let (format, r, next) = block(s, at, base, &COUNTER_RECORDS)?;
        if format == 1 {
            generic_interface(r, agent, now_ms, state);
        }
        at = next;
        seen += 1;
    }
    Ok(())
}

/// Generic interface counters (counter record format 1, 88 bytes).
fn generic_interface(r: &[u8], agent: Addr, now_ms: u64, state: &mut State) {
    let w = |at: usize| u32_at(r, at).unwrap_or(0);
    let q = |at: usize| u64_at(r, at).unwrap_or(0);
    if r.len() < 88 {
        return;
    }
    let c = IfCounters {
        if_type: w(4),
        speed: q(8),
        in_octets: q(24),
        in_packets: u64::from(w(32)) + u64::from(w(36)) + u64::from(w(40)),
        in_discards: w(44),
        in_errors: w(48),
        out_octets: q(56),
        out_packets: u64::from(w(64)) + u64::from(w(68)) + u64::from(w(72)),
        out_discards: w(76),
        out_errors: w(80),
        at_ms: now_ms,
    };
    let key = (agent, w(0));
    if state.interfaces.len() < MAX_INTERFACES || state.interfaces.contains_key(&key) {
        state.interfaces.insert(key, c);
    } else {
        state.interfaces_refused += 1;
    }
}
