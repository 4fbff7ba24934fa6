//! NetFlow version 5 (IN-2): a 24-byte header and up to 30 fixed 48-byte
//! records (Cisco's "NetFlow Export Datagram Format").
//!
//! Counts are multiplied by the header's sampling interval (low 14 bits; 0
//! means unsampled). The flow's time is its end (`Last`, in router uptime)
//! placed on levee's clock by its age at export (`sys_uptime - Last`), so
//! the router's wall clock does not matter. ICMP type and code come from
//! the destination port, as exporters encode them. `flow_sequence` counts
//! flows, so a jump in it is the number of flow records lost.
//!
//! The record loop has a portable path ([`write`]) and, on x86-64, vector
//! paths chosen at run time ([`simd`]) that write the same records.

use crate::error::{DecodeError, ErrorKind, Protocol};
use crate::record::{proto, Addr, FlowRecord};
use crate::{Datagram, Tally};

#[cfg(target_arch = "x86_64")]
mod simd;

const P: Protocol = Protocol::Netflow5;
const HEADER: usize = 24;
const RECORD: usize = 48;

/// Sequence state per engine (type, id) of one exporter.
#[derive(Debug, Default)]
pub struct State {
    engines: Vec<(u8, u8, u32)>,
}

impl State {
    /// Records that `count` flows starting at `seq` arrived; returns the
    /// number of flows lost since the previous datagram.
    fn track(&mut self, engine: (u8, u8), seq: u32, count: u32) -> u64 {
        let next = seq.wrapping_add(count);
        if let Some(e) = self.engines.iter_mut().find(|e| (e.0, e.1) == engine) {
            let gap = seq.wrapping_sub(e.2);
            e.2 = next;
            return if gap > 0 && gap < 1 << 31 {
                u64::from(gap)
            } else {
                0
            };
        }
        if self.engines.len() < 256 {
            self.engines.push((engine.0, engine.1, next));
        }
        0
    }
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// How long before the export a flow ended, from the header's uptime and the
/// flow's `Last` (both router uptime, ms). Uptime wraps after ~49.7 days;
/// the difference is right across it. `None` for a "last" after the export
/// time or implausibly long before it: a confused exporter, whose records
/// are placed at their arrival.
#[inline(always)]
fn age(uptime: u32, last: u32) -> Option<u64> {
    let age = u64::from(uptime.wrapping_sub(last));
    (age <= crate::MAX_FLOW_AGE_MS).then_some(age)
}

/// What every record of one datagram shares.
struct Head {
    uptime: u32,
    rate: u32,
    exporter: Addr,
    now: u64,
}

/// The record one 48-byte v5 record becomes, and whether its time was
/// implausible (see [`age`]): the reference the vector paths are tested against.
#[inline(always)]
fn record(rec: &[u8; RECORD], h: &Head) -> (FlowRecord, bool) {
    let protocol = rec[38];
    let (sport, dport) = (be16(rec, 32), be16(rec, 34));
    // ICMP type and code travel in the destination port.
    let icmp = protocol == proto::ICMP;
    let (src_port, dst_port) = if icmp { (0, 0) } else { (sport, dport) };
    let (icmp_type, icmp_code) = if icmp {
        ((dport >> 8) as u8, dport as u8)
    } else {
        (0, 0)
    };
    let (first, last) = first_last(rec);
    let (time_ms, skewed) = placed(h, last);
    let rate64 = u64::from(h.rate);
    let r = FlowRecord {
        time_ms,
        packets: u64::from(be32(rec, 16)) * rate64,
        bytes: u64::from(be32(rec, 20)) * rate64,
        src: Addr::from_v4_bits(be32(rec, 0)),
        dst: Addr::from_v4_bits(be32(rec, 4)),
        exporter: h.exporter,
        sampling: h.rate,
        in_if: u32::from(be16(rec, 12)),
        out_if: u32::from(be16(rec, 14)),
        src_port,
        dst_port,
        protocol,
        tcp_flags: rec[37],
        ttl: 0,
        icmp_type,
        icmp_code,
        flags: 0,
        duration_s: duration(first, last),
    };
    (r, skewed)
}

/// The flow's `First` and `Last` (router uptime, ms).
#[inline(always)]
fn first_last(rec: &[u8; RECORD]) -> (u32, u32) {
    // One 8-byte load for both (the vector loops measured faster so).
    let w = u64::from_be_bytes([
        rec[24], rec[25], rec[26], rec[27], rec[28], rec[29], rec[30], rec[31],
    ]);
    ((w >> 32) as u32, w as u32)
}

/// The flow's time on levee's clock from its `Last`, and whether its age
/// was implausible (the flow is then placed at the datagram's arrival).
#[inline(always)]
fn placed(h: &Head, last: u32) -> (u64, bool) {
    let age = age(h.uptime, last);
    (h.now.saturating_sub(age.unwrap_or(0)), age.is_none())
}

/// The flow's length in whole seconds from its `First` and `Last`.
#[inline(always)]
fn duration(first: u32, last: u32) -> u16 {
    (last.wrapping_sub(first) / 1000).min(u32::from(u16::MAX)) as u16
}

/// Writes one record per slot (`slots` is as long as `records`); returns
/// how many had an implausible time. The portable path; on x86-64,
/// [`simd`] has faster ones that write the same.
fn write(
    records: &[[u8; RECORD]],
    h: &Head,
    slots: &mut [std::mem::MaybeUninit<FlowRecord>],
) -> u64 {
    let mut skewed = 0;
    for (slot, rec) in slots.iter_mut().zip(records) {
        let (r, skew) = record(rec, h);
        slot.write(r);
        skewed += u64::from(skew);
    }
    skewed
}

/// Decodes one NetFlow v5 datagram.
pub fn decode(
    dg: &Datagram<'_>,
    state: &mut State,
    out: &mut Vec<FlowRecord>,
    tally: &mut Tally,
) -> Result<(), DecodeError> {
    let b = dg.data;
    if b.len() < HEADER {
        return Err(DecodeError::new(P, ErrorKind::Truncated, 0, "header"));
    }
    if be16(b, 0) != 5 {
        return Err(DecodeError::new(
            P,
            ErrorKind::BadVersion,
            0,
            "not NetFlow version 5",
        ));
    }
    let count = usize::from(be16(b, 2));
    let uptime = be32(b, 4);
    let seq = be32(b, 16);
    let engine = (b[20], b[21]);
    let interval = u32::from(be16(b, 22) & 0x3fff);
    let rate = interval.max(1);

    // Decode what is really there; a short datagram still yields its whole records.
    let present = (b.len() - HEADER) / RECORD;
    let n = count.min(present);
    tally.lost += state.track(engine, seq, count as u32);
    let exporter = crate::exporter_addr(dg);
    let now = dg.received_ms;
    // Fixed-size records: every index into one is checked at compile time,
    // and the count is a division by a constant (chunks_exact divides at run time).
    let (records, _) = b[HEADER..HEADER + n * RECORD].as_chunks::<RECORD>();
    let head = Head {
        uptime,
        rate,
        exporter,
        now,
    };
    out.reserve(n);
    let slots = &mut out.spare_capacity_mut()[..n];
    #[cfg(target_arch = "x86_64")]
    let skewed = simd::Path::best().write(records, &head, slots);
    #[cfg(not(target_arch = "x86_64"))]
    let skewed = write(records, &head, slots);
    // SAFETY: every path of `write` initialises every slot it is given,
    // and it was given the `n` slots just past the length.
    unsafe { out.set_len(out.len() + n) };
    tally.clock_skew += skewed;
    tally.records += n as u64;
    if n < count {
        return Err(DecodeError::new(
            P,
            ErrorKind::Truncated,
            HEADER + n * RECORD,
            "fewer records than the header counts",
        ));
    }
    Ok(())
}
