//! NetFlow v9 (IN-3, RFC 3954) and IPFIX (IN-4, RFC 7011): template-driven
//! export, decoded with per-exporter template caches.
//!
//! The two share everything but their headers and set ids, so one decoder
//! serves both ([`Version`]). State is kept per observation domain (IPFIX)
//! or source id (NetFlow v9) in [`State`]: templates, sampler rates learnt
//! from options data, the expected sequence number, the exporter's boot time,
//! and data sets held while their template is missing.
//!
//! A datagram is walked in three passes: template sets, then options data
//! (sampler tables), then flow data — so data placed before its template in
//! the same datagram (Juniper MS-DPC does this) decodes, and is scaled by a
//! sampling rate sent beside it. Data whose template is still unknown is counted as a template
//! miss and held (bounded: [`MAX_HELD_SETS`], [`MAX_HELD_BYTES`],
//! [`HOLD_MS`]); it is decoded if the template arrives in time.
//!
//! Limits keep a hostile exporter from growing memory: [`MAX_DOMAINS`] per
//! exporter, [`MAX_TEMPLATES`] per exporter, [`crate::template::MAX_FIELDS`]
//! per template.
//!
//! Times: a flow's end is placed on levee's clock by its age at export
//! (export time minus flow end, both by the router's clock), so a router with
//! a wrong clock still yields the right observation time. An age beyond
//! [`crate::MAX_FLOW_AGE_MS`] means the exporter's clocks disagree with each
//! other; the record is then placed at its arrival and the skew counted.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{DecodeError, ErrorKind, Protocol};
use crate::record::{flags, proto, Addr, FlowRecord};
use crate::template::{
    Checked, EndTime, Fast, FieldSpec, Fields, Kind, Layout, Plan, Template, TemplateError, Window,
};
use crate::{Datagram, Tally};

pub const MAX_DOMAINS: usize = 256;
pub const MAX_TEMPLATES: usize = 4096;
pub const MAX_HELD_SETS: usize = 32;
pub const MAX_HELD_BYTES: usize = 256 * 1024;
pub const HOLD_MS: u64 = 30_000;
/// Samplers remembered per domain.
const MAX_SAMPLERS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V9,
    Ipfix,
}

impl Version {
    fn protocol(self) -> Protocol {
        match self {
            Version::V9 => Protocol::Netflow9,
            Version::Ipfix => Protocol::Ipfix,
        }
    }
}

/// A data set waiting for its template.
#[derive(Debug)]
struct Held {
    template: u16,
    received_ms: u64,
    age_base: AgeBase,
    data: Box<[u8]>,
}

/// One observation domain (IPFIX) or source id (NetFlow v9).
#[derive(Debug, Default)]
struct Domain {
    templates: HashMap<u16, Arc<Template>>,
    /// Sampler/selector id → sampling rate, from options data.
    samplers: HashMap<u64, u32>,
    /// A rate from options data that names no sampler (the whole domain).
    domain_rate: Option<u32>,
    /// The exporter's boot time by its own clock (IPFIX systemInitTimeMilliseconds).
    sys_init_ms: Option<u64>,
    expected_seq: Option<u32>,
    held: Vec<Held>,
}

/// Flows whose last running totals are remembered per exporter (for
/// exporters that send totals, not deltas).
pub const MAX_TOTALS: usize = 65_536;

/// What NetFlow v9/IPFIX decoding remembers about one exporter.
#[derive(Debug, Default)]
pub struct State {
    domains: HashMap<(Version, u32), Domain>,
    templates: usize,
    work: Work,
}

/// Per-exporter scratch and memory the record decoder uses.
#[derive(Debug, Default)]
struct Work {
    /// Reused layout for variable-length records.
    scratch: Layout,
    /// Flow key → (packets, octets) as last reported, for total counters.
    totals: HashMap<u64, (u64, u64)>,
}

impl State {
    /// Number of templates cached for this exporter.
    pub fn template_count(&self) -> usize {
        self.templates
    }

    /// The sampling rate learnt for a sampler id (tests, diagnostics).
    pub fn sampler_rate(&self, version: Version, domain: u32, sampler: u64) -> Option<u32> {
        self.domains
            .get(&(version, domain))?
            .samplers
            .get(&sampler)
            .copied()
    }
}

/// The router-clock facts a record's age is computed from.
#[derive(Debug, Clone, Copy)]
struct AgeBase {
    /// Export time by the router's clock, ms.
    export_ms: u64,
    /// NetFlow v9: router uptime at export, ms.
    uptime_ms: Option<u32>,
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes one NetFlow v9 or IPFIX datagram.
pub fn decode(
    version: Version,
    dg: &Datagram<'_>,
    state: &mut State,
    out: &mut Vec<FlowRecord>,
    tally: &mut Tally,
) -> Result<(), DecodeError> {
    let p = version.protocol();
    let b = dg.data;
    let (hdr_len, body_end, domain_id, seq, base) = match version {
        Version::V9 => {
            if b.len() < 20 {
                return Err(DecodeError::new(p, ErrorKind::Truncated, 0, "header"));
            }
            let uptime = be32(b, 4);
            let secs = be32(b, 8);
            (
                20,
                b.len(),
                be32(b, 16),
                be32(b, 12),
                AgeBase {
                    export_ms: u64::from(secs) * 1000,
                    uptime_ms: Some(uptime),
                },
            )
        }
        Version::Ipfix => {
            if b.len() < 16 {
                return Err(DecodeError::new(p, ErrorKind::Truncated, 0, "header"));
            }
            let len = usize::from(be16(b, 2));
            if len < 16 {
                return Err(DecodeError::new(
                    p,
                    ErrorKind::BadLength,
                    2,
                    "message length below the header",
                ));
            }
            (
                16,
                len.min(b.len()),
                be32(b, 12),
                be32(b, 8),
                AgeBase {
                    export_ms: u64::from(be32(b, 4)) * 1000,
                    uptime_ms: None,
                },
            )
        }
    };
    if version == Version::Ipfix && usize::from(be16(b, 2)) > b.len() {
        // Keep what is there; the error is reported after decoding it.
        tally.errors[ErrorKind::Truncated.index()] += 1;
    }
    let body = &b[..body_end];

    let key = (version, domain_id);
    if !state.domains.contains_key(&key) && state.domains.len() >= MAX_DOMAINS {
        return Err(DecodeError::new(
            p,
            ErrorKind::TemplateLimit,
            12,
            "too many observation domains",
        ));
    }
    let State {
        domains,
        templates,
        work,
    } = state;
    let domain = domains.entry(key).or_default();

    // Pass 1: templates (and withdrawals).
    let mut fatal = None;
    walk_sets(version, body, hdr_len, &mut fatal, |set_id, _, set| {
        let is_template_set = match version {
            Version::V9 => set_id <= 1,
            Version::Ipfix => set_id == 2 || set_id == 3,
        };
        if is_template_set {
            parse_templates(version, set_id, set, domain, templates, tally);
        }
    });

    // Pass 2: options data (sampler tables), so that data in the same
    // datagram is scaled by them whatever the order. Pass 3: flow data.
    let exporter = crate::exporter_addr(dg);
    let mut data_records: u64 = 0;
    let mut complete = true;
    for options_pass in [true, false] {
        walk_sets(version, body, hdr_len, &mut fatal, |set_id, set_at, set| {
            if set_id < 256 {
                return;
            }
            match domain.templates.get(&set_id).cloned() {
                Some(t) if matches!(t.kind, Kind::Options { .. }) == options_pass => {
                    data_records += decode_set(
                        &t,
                        body,
                        set_at..set_at + set.len(),
                        domain,
                        work,
                        base,
                        dg.received_ms,
                        exporter,
                        out,
                        tally,
                    );
                }
                Some(_) => {}
                None if options_pass => {}
                None => {
                    complete = false;
                    tally.template_misses += 1;
                    hold(domain, set_id, set, dg.received_ms, base);
                }
            }
        });
    }

    // Held sets whose template has now arrived, and expiry of the rest.
    release_held(domain, work, dg.received_ms, exporter, out, tally);

    // Sequence: v9 counts export packets, IPFIX counts data records.
    match version {
        Version::V9 => {
            if let Some(exp) = domain.expected_seq {
                let gap = seq.wrapping_sub(exp);
                if gap > 0 && gap < 1 << 31 {
                    tally.lost += u64::from(gap);
                }
            }
            domain.expected_seq = Some(seq.wrapping_add(1));
        }
        Version::Ipfix => {
            if let Some(exp) = domain.expected_seq {
                let gap = seq.wrapping_sub(exp);
                if gap > 0 && gap < 1 << 31 {
                    tally.lost += u64::from(gap);
                }
            }
            // Only a fully decoded message says where the next one starts.
            domain.expected_seq = complete.then(|| seq.wrapping_add(data_records as u32));
        }
    }
    match fatal {
        Some(e) => Err(DecodeError { protocol: p, ..e }),
        None => Ok(()),
    }
}

/// Calls `f(set_id, body_offset, set_body)` for each set; stops at padding
/// or at a set whose length is impossible (recorded in `fatal`).
fn walk_sets(
    version: Version,
    b: &[u8],
    mut at: usize,
    fatal: &mut Option<DecodeError>,
    mut f: impl FnMut(u16, usize, &[u8]),
) {
    let p = version.protocol();
    while at + 4 <= b.len() {
        let id = be16(b, at);
        let len = usize::from(be16(b, at + 2));
        if len < 4 {
            // Zero fill after the last set (PAN-OS pads datagrams) is not an error.
            if b[at..].iter().all(|&x| x == 0) {
                return;
            }
            fatal.get_or_insert(DecodeError::new(
                p,
                ErrorKind::BadLength,
                at + 2,
                "set length below 4",
            ));
            return;
        }
        if at + len > b.len() {
            fatal.get_or_insert(DecodeError::new(
                p,
                ErrorKind::BadLength,
                at + 2,
                "set runs past the datagram",
            ));
            return;
        }
        f(id, at + 4, &b[at + 4..at + len]);
        at += len;
    }
    if at < b.len() && b[at..].iter().any(|&x| x != 0) {
        fatal.get_or_insert(DecodeError::new(
            p,
            ErrorKind::Truncated,
            at,
            "bytes after the last set",
        ));
    }
}

fn parse_templates(
    version: Version,
    set_id: u16,
    set: &[u8],
    domain: &mut Domain,
    total: &mut usize,
    tally: &mut Tally,
) {
    let options = match version {
        Version::V9 => set_id == 1,
        Version::Ipfix => set_id == 3,
    };
    let mut pos = 0usize;
    // A template record is at least 4 bytes; less is padding.
    while pos + 4 <= set.len() {
        let id = be16(set, pos);
        let (fields_at, field_count, kind) = if options {
            match version {
                Version::V9 => {
                    // RFC 3954 §6.1: scope length and option length in bytes.
                    if pos + 6 > set.len() {
                        break;
                    }
                    let scope_len = usize::from(be16(set, pos + 2));
                    let opt_len = usize::from(be16(set, pos + 4));
                    if scope_len % 4 != 0 || opt_len % 4 != 0 {
                        tally.errors[ErrorKind::BadTemplate.index()] += 1;
                        return;
                    }
                    let scope = (scope_len / 4) as u16;
                    (
                        pos + 6,
                        (scope_len + opt_len) / 4,
                        Kind::Options { scope, v9: true },
                    )
                }
                Version::Ipfix => {
                    if pos + 6 > set.len() {
                        break;
                    }
                    let count = usize::from(be16(set, pos + 2));
                    let scope = be16(set, pos + 4);
                    if count == 0 {
                        withdraw(domain, id, true, total);
                        pos += 4;
                        continue;
                    }
                    (pos + 6, count, Kind::Options { scope, v9: false })
                }
            }
        } else {
            let count = usize::from(be16(set, pos + 2));
            if count == 0 {
                if version == Version::Ipfix {
                    withdraw(domain, id, false, total);
                }
                pos += 4;
                continue;
            }
            (pos + 4, count, Kind::Data)
        };
        if id < 256 {
            // Template ids below 256 are reserved for set ids; a record
            // claiming one is garbage (often the zero padding of the set).
            if set[pos..].iter().all(|&x| x == 0) {
                return;
            }
            tally.errors[ErrorKind::BadTemplate.index()] += 1;
            return;
        }
        if field_count > crate::template::MAX_FIELDS {
            tally.errors[ErrorKind::BadTemplate.index()] += 1;
            return; // the rest of the set cannot be framed safely either
        }
        let mut fields = Vec::with_capacity(field_count);
        let mut fp = fields_at;
        for _ in 0..field_count {
            if fp + 4 > set.len() {
                tally.errors[ErrorKind::Truncated.index()] += 1;
                return;
            }
            let raw = be16(set, fp);
            let len = be16(set, fp + 2);
            fp += 4;
            let enterprise = if version == Version::Ipfix && raw & 0x8000 != 0 {
                if fp + 4 > set.len() {
                    tally.errors[ErrorKind::Truncated.index()] += 1;
                    return;
                }
                let e = be32(set, fp);
                fp += 4;
                e
            } else {
                0
            };
            let ie = if version == Version::Ipfix {
                raw & 0x7fff
            } else {
                raw
            };
            fields.push(FieldSpec {
                ie,
                len,
                enterprise,
            });
        }
        pos = fp;
        if let Kind::Options { scope, .. } = kind {
            if usize::from(scope) > fields.len() {
                tally.errors[ErrorKind::BadTemplate.index()] += 1;
                continue;
            }
        }
        // A refresh with the same fields changes nothing.
        if domain
            .templates
            .get(&id)
            .is_some_and(|t| *t.fields == *fields && t.kind == kind)
        {
            continue;
        }
        match Template::new(id, kind, fields) {
            Ok(t) => {
                if !domain.templates.contains_key(&id) {
                    if *total >= MAX_TEMPLATES {
                        tally.errors[ErrorKind::TemplateLimit.index()] += 1;
                        continue;
                    }
                    *total += 1;
                }
                domain.templates.insert(id, Arc::new(t));
            }
            Err(
                TemplateError::TooManyFields | TemplateError::ZeroLength | TemplateError::TooLong,
            ) => {
                tally.errors[ErrorKind::BadTemplate.index()] += 1;
            }
        }
    }
}

/// IPFIX template withdrawal (RFC 7011 §8.1): one id, or all (id 2 or 3).
fn withdraw(domain: &mut Domain, id: u16, options: bool, total: &mut usize) {
    let before = domain.templates.len();
    if id == 2 || id == 3 {
        domain
            .templates
            .retain(|_, t| matches!(t.kind, Kind::Options { .. }) != options);
    } else {
        domain.templates.remove(&id);
    }
    *total -= before - domain.templates.len();
}

fn hold(domain: &mut Domain, template: u16, set: &[u8], received_ms: u64, age_base: AgeBase) {
    let held_bytes: usize = domain.held.iter().map(|h| h.data.len()).sum();
    if domain.held.len() >= MAX_HELD_SETS || held_bytes + set.len() > MAX_HELD_BYTES {
        return;
    }
    domain.held.push(Held {
        template,
        received_ms,
        age_base,
        // Eight bytes of room before the first record, as decode_set needs.
        data: [&[0u8; 8][..], set].concat().into_boxed_slice(),
    });
}

fn release_held(
    domain: &mut Domain,
    work: &mut Work,
    now_ms: u64,
    exporter: Addr,
    out: &mut Vec<FlowRecord>,
    tally: &mut Tally,
) {
    if domain.held.is_empty() {
        return;
    }
    let held = std::mem::take(&mut domain.held);
    for h in held {
        if let Some(t) = domain.templates.get(&h.template).cloned() {
            decode_set(
                &t,
                &h.data,
                8..h.data.len(),
                domain,
                work,
                h.age_base,
                h.received_ms,
                exporter,
                out,
                tally,
            );
        } else if now_ms.saturating_sub(h.received_ms) < HOLD_MS {
            domain.held.push(h);
        }
    }
}

/// Decodes the records of the data set at `set` in `buf`; returns how many
/// there were. `set.start` is at least 8 (a message or set header precedes
/// it), which [`Fast::read`] relies on.
#[allow(clippy::too_many_arguments)]
fn decode_set(
    t: &Template,
    buf: &[u8],
    set: std::ops::Range<usize>,
    domain: &mut Domain,
    work: &mut Work,
    base: AgeBase,
    received_ms: u64,
    exporter: Addr,
    out: &mut Vec<FlowRecord>,
    tally: &mut Tally,
) -> u64 {
    debug_assert!(set.start >= 8 && set.end <= buf.len());
    let mut n = 0u64;
    let ctx = Ctx {
        base,
        received_ms,
        exporter,
        sys_init_ms: domain.sys_init_ms,
    };
    match (t.fixed_len, t.kind) {
        (Some(len), Kind::Data) => {
            let count = (set.end - set.start) / len;
            out.reserve(count);
            // The rate is the same for every record unless records name it.
            let rate = (!t.plan.sampling_in_record).then(|| domain_rate(domain));
            for i in 0..count {
                let at = set.start + i * len;
                let rate = rate
                    .unwrap_or_else(|| record_rate(&t.layout, &buf[at..at + len], domain, tally));
                match Window::new(buf, at, len) {
                    Some(w) => flow(&t.plan, w, rate, &ctx, &mut work.totals, out, tally),
                    None => {
                        let r = Checked { buf, at };
                        flow(&t.plan, r, rate, &ctx, &mut work.totals, out, tally)
                    }
                }
            }
            n = count as u64;
        }
        (Some(len), Kind::Options { .. }) => {
            for rec in buf[set.clone()].chunks_exact(len) {
                options_record(&t.layout, rec, domain, tally);
                n += 1;
            }
        }
        (None, kind) => {
            let mut at = set.start;
            while at + t.min_len <= set.end {
                let Some(len) = t.layout_of(&buf[at..set.end], &mut work.scratch) else {
                    // Only padding can be shorter than a record; anything
                    // else is a record whose lengths run past the set.
                    if buf[at..set.end].iter().any(|&x| x != 0) {
                        tally.errors[ErrorKind::BadLength.index()] += 1;
                    }
                    break;
                };
                let layout = work.scratch;
                let rec = &buf[at..at + len];
                match kind {
                    Kind::Options { .. } => options_record(&layout, rec, domain, tally),
                    Kind::Data => {
                        let rate = record_rate(&layout, rec, domain, tally);
                        // Fast reads must not see past this record.
                        flow(
                            &layout.plan(),
                            Checked {
                                buf: &buf[..at + len],
                                at,
                            },
                            rate,
                            &ctx,
                            &mut work.totals,
                            out,
                            tally,
                        );
                    }
                }
                at += len;
                n += 1;
            }
        }
    }
    tally.records += n;
    n
}

/// A flow's identity for running totals: addresses, ports, protocol, interfaces.
fn flow_key(r: &FlowRecord) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        r.src, r.dst, r.src_port, r.dst_port, r.protocol, r.in_if, r.out_if,
    )
        .hash(&mut h);
    h.finish()
}

/// What every record of a set shares.
struct Ctx {
    base: AgeBase,
    received_ms: u64,
    exporter: Addr,
    sys_init_ms: Option<u64>,
}

/// Decodes the data record `rec` reads into `out`.
#[allow(clippy::too_many_arguments)]
#[inline]
fn flow(
    p: &Plan,
    rec: impl Fields,
    rate: u32,
    ctx: &Ctx,
    totals: &mut HashMap<u64, (u64, u64)>,
    out: &mut Vec<FlowRecord>,
    tally: &mut Tally,
) {
    let Some(mut r) = flow_record(p, rec, rate, ctx, tally) else {
        return;
    };
    if p.totals {
        // Running totals (IEs 85/86): what the flow added since its last
        // report is the difference; a total that went down is a new flow
        // reusing the key. Memory is bounded: a full map starts over.
        let (tp, to) = (rec.get(p.packets), rec.get(p.octets));
        let key = flow_key(&r);
        let (dp, dob) = match totals.get(&key) {
            Some(&(lp, lo)) if tp >= lp && to >= lo => (tp - lp, to - lo),
            _ => (tp, to),
        };
        if totals.len() >= MAX_TOTALS && !totals.contains_key(&key) {
            totals.clear();
        }
        totals.insert(key, (tp, to));
        r.packets = dp.saturating_mul(u64::from(rate));
        r.bytes = dob.saturating_mul(u64::from(rate));
    }
    out.push(r);
    // RFC 5103 biflows: the reverse direction is a flow of its own.
    if p.rev_packets.present() || p.rev_octets.present() {
        let rev_p = rec.get(p.rev_packets);
        let rev_b = rec.get(p.rev_octets);
        if rev_p > 0 || rev_b > 0 {
            let rate = u64::from(r.sampling);
            out.push(FlowRecord {
                packets: rev_p.saturating_mul(rate),
                bytes: rev_b.saturating_mul(rate),
                src: r.dst,
                dst: r.src,
                src_port: r.dst_port,
                dst_port: r.src_port,
                in_if: r.out_if,
                out_if: r.in_if,
                flags: r.flags & !(flags::TTL_KNOWN | flags::DIRECTION_KNOWN | flags::EGRESS),
                ..r
            });
        }
    }
}

/// The sampling rate an options (or data) record states, if any.
fn stated_rate(l: &Layout, rec: &[u8]) -> Option<u64> {
    if let Some(v) = l.sampling_interval.uint(rec) {
        return Some(v);
    }
    if let Some(v) = l.sampler_random_interval.uint(rec) {
        return Some(v);
    }
    if let (Some(size), Some(pop)) = (l.sampling_size.uint(rec), l.sampling_population.uint(rec)) {
        return Some(pop.checked_div(size).unwrap_or(0));
    }
    if let (Some(iv), Some(space)) = (l.packet_interval.uint(rec), l.packet_space.uint(rec)) {
        return Some(iv.saturating_add(space).checked_div(iv).unwrap_or(0));
    }
    if let Some(bits) = l
        .sampling_probability
        .uint(rec)
        .filter(|_| l.sampling_probability.len == 8)
    {
        let p = f64::from_bits(bits);
        return Some(if p > 0.0 && p <= 1.0 {
            (1.0 / p).round() as u64
        } else {
            0
        });
    }
    None
}

fn options_record(l: &Layout, rec: &[u8], domain: &mut Domain, tally: &mut Tally) {
    if let Some(init) = l.sys_init_ms.uint(rec) {
        domain.sys_init_ms = Some(init);
    }
    let Some(rate) = stated_rate(l, rec) else {
        return;
    };
    if rate == 0 {
        tally.errors[ErrorKind::ZeroSampling.index()] += 1;
        return;
    }
    let rate = rate.min(u64::from(u32::MAX)) as u32;
    match l.sampler_id.uint(rec).or_else(|| l.selector_id.uint(rec)) {
        Some(id) => {
            if domain.samplers.len() < MAX_SAMPLERS || domain.samplers.contains_key(&id) {
                domain.samplers.insert(id, rate);
            }
        }
        None => domain.domain_rate = Some(rate),
    }
}

/// The sampling rate for a data record: stated in the record, or by its
/// sampler id, or for the whole domain.
#[inline]
fn record_rate(l: &Layout, rec: &[u8], domain: &Domain, tally: &mut Tally) -> u32 {
    if let Some(r) = stated_rate(l, rec) {
        if r == 0 {
            tally.errors[ErrorKind::ZeroSampling.index()] += 1;
            return 1;
        }
        return r.min(u64::from(u32::MAX)) as u32;
    }
    if let Some(id) = l.sampler_id.uint(rec).or_else(|| l.selector_id.uint(rec)) {
        if let Some(&r) = domain.samplers.get(&id) {
            return r;
        }
    }
    domain_rate(domain)
}

/// The rate for records that do not name theirs: the domain's, or its only
/// sampler's; 1 when nothing says otherwise.
fn domain_rate(domain: &Domain) -> u32 {
    if let Some(r) = domain.domain_rate {
        return r;
    }
    if domain.samplers.len() == 1 {
        return domain.samplers.values().copied().next().unwrap_or(1);
    }
    1
}

/// NTP timestamp (RFC 5905: seconds since 1900, 32-bit fraction) to Unix ms.
fn ntp_to_unix_ms(v: u64) -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let secs = (v >> 32).saturating_sub(NTP_UNIX_OFFSET);
    let frac_ms = ((v & 0xffff_ffff) * 1000) >> 32;
    secs * 1000 + frac_ms
}

/// How long before export the flow ended, by the router's clock (ms).
#[inline]
fn age_ms(p: &Plan, rec: impl Fields, ctx: &Ctx) -> u64 {
    let export_ms = ctx.base.export_ms;
    let v = rec.get(p.end);
    match p.end_kind {
        EndTime::Ms => export_ms.saturating_sub(v),
        EndTime::Seconds => export_ms.saturating_sub(v.saturating_mul(1000)),
        EndTime::NtpMicros => export_ms.saturating_sub(ntp_to_unix_ms(v)),
        EndTime::DeltaMicros => v / 1000,
        EndTime::SysUp => {
            if let Some(up) = ctx.base.uptime_ms {
                // Uptime wraps after ~49.7 days; the difference is right across it.
                u64::from(up.wrapping_sub(v as u32))
            } else if let Some(init) = ctx.sys_init_ms {
                export_ms.saturating_sub(init.saturating_add(v))
            } else {
                0
            }
        }
        EndTime::Export => 0,
    }
}

#[inline]
fn flow_record(
    p: &Plan,
    rec: impl Fields,
    rate: u32,
    ctx: &Ctx,
    tally: &mut Tally,
) -> Option<FlowRecord> {
    let (s4, d4) = (rec.get(p.src4) as u32, rec.get(p.dst4) as u32);
    // Templates with both families (Cisco's MPLS templates) fill one pair
    // per record and zero the other: an all-zero IPv4 pair means IPv6.
    let (src, dst, v6) = if p.v4 && !(p.v6 && s4 == 0 && d4 == 0) {
        (Addr::from_v4_bits(s4), Addr::from_v4_bits(d4), false)
    } else if p.v6 {
        let join = |h: [Fast; 2]| Addr::from_v6_bits(rec.get(h[0]), rec.get(h[1]));
        (join(p.src6), join(p.dst6), true)
    } else {
        // Not an IP flow (L2-only, or a template levee cannot place).
        return None;
    };
    let protocol = rec.get(p.protocol) as u8;
    let mut src_port = rec.get(p.src_port) as u16;
    let mut dst_port = rec.get(p.dst_port) as u16;
    let (mut icmp_type, mut icmp_code) = (0u8, 0u8);
    if protocol == proto::ICMP || protocol == proto::ICMPV6 {
        let (tc, t, c) = if v6 {
            (p.icmp_type_code6, p.icmp_type6, p.icmp_code6)
        } else {
            (p.icmp_type_code4, p.icmp_type4, p.icmp_code4)
        };
        let code = if tc.present() {
            rec.get(tc) as u16
        } else if t.present() {
            (rec.get(t) as u16) << 8 | rec.get(c) as u16 & 0xff
        } else {
            // Exporters without ICMP fields put type·256+code in the port.
            dst_port
        };
        icmp_type = (code >> 8) as u8;
        icmp_code = code as u8;
        src_port = 0;
        dst_port = 0;
    }
    let mut fl = if v6 { flags::IPV6 } else { 0 };
    if p.ttl.present() {
        fl |= flags::TTL_KNOWN;
    }
    if p.direction.present() {
        fl |= flags::DIRECTION_KNOWN
            | if rec.get(p.direction) == 1 {
                flags::EGRESS
            } else {
                0
            };
    }
    if p.frag_offset.present() || p.frag_flags.present() {
        let frag_off = rec.get(p.frag_offset);
        if frag_off != 0 || rec.get(p.frag_flags) & 0x20 != 0 {
            fl |= flags::FRAGMENT;
        }
        if frag_off != 0 {
            fl |= flags::LATER_FRAGMENT | flags::NO_L4;
        }
    }
    let rate64 = u64::from(rate);
    let mut age = age_ms(p, rec, ctx);
    if age > crate::MAX_FLOW_AGE_MS {
        tally.clock_skew += 1;
        age = 0;
    }
    Some(FlowRecord {
        time_ms: ctx.received_ms.saturating_sub(age),
        packets: rec.get(p.packets).saturating_mul(rate64),
        bytes: rec.get(p.octets).saturating_mul(rate64),
        src,
        dst,
        exporter: ctx.exporter,
        sampling: rate,
        in_if: rec.get(p.in_if) as u32,
        out_if: rec.get(p.out_if) as u32,
        src_port,
        dst_port,
        protocol,
        tcp_flags: rec.get(p.tcp_flags) as u8,
        ttl: rec.get(p.ttl) as u8,
        icmp_type,
        icmp_code,
        flags: fl,
        duration_s: duration_s(p, rec),
    })
}

/// Flow end minus start, whole seconds (0 when the template lacks a start).
#[inline]
fn duration_s(p: &Plan, rec: impl Fields) -> u16 {
    if !p.start.present() {
        return 0;
    }
    let (start, end) = (rec.get(p.start), rec.get(p.end));
    let ms = match p.end_kind {
        EndTime::Ms | EndTime::SysUp => end.saturating_sub(start),
        EndTime::Seconds => end.saturating_sub(start).saturating_mul(1000),
        EndTime::NtpMicros => ntp_to_unix_ms(end).saturating_sub(ntp_to_unix_ms(start)),
        // Deltas count back from export: the start is the larger.
        EndTime::DeltaMicros => start.saturating_sub(end) / 1000,
        EndTime::Export => 0,
    };
    (ms / 1000).min(u64::from(u16::MAX)) as u16
}
