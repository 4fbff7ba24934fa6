//! NetFlow v9 / IPFIX templates, compiled for decoding.
//!
//! A [`Template`] is parsed once, when the exporter sends it, into a
//! [`Layout`]: for each piece of information levee uses (addresses, counters,
//! ports, times, sampling fields, …) the offset and length of the field that
//! carries it. Decoding a data record is then straight-line code over fixed
//! offsets — no per-field dispatch, no allocation. Templates with
//! variable-length fields (RFC 7011 §7) get their layout computed per record
//! into a reused [`Layout`].
//!
//! Information elements are IANA's IPFIX numbers (RFC 7012), which NetFlow v9
//! (RFC 3954 §8) shares for the fields levee reads. Field lengths are taken as
//! sent: integers of any length 1–8 (reduced-size encoding, RFC 7011 §6.2) are
//! read big-endian; an address field of the wrong length is ignored rather
//! than misread.

/// IANA's enterprise number for reverse information elements (RFC 5103).
pub const REVERSE_PEN: u32 = 29305;

/// Template field limits: beyond them a template is refused as hostile.
pub const MAX_FIELDS: usize = 512;

/// One field of a template as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldSpec {
    pub ie: u16,
    /// 65535 marks a variable-length field (IPFIX, and some NetFlow v9).
    pub len: u16,
    pub enterprise: u32,
}

pub const VARLEN: u16 = 65535;

/// Where one piece of information sits in a record (`len == 0`: absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub off: u16,
    pub len: u16,
}

impl Pos {
    #[inline]
    pub fn present(self) -> bool {
        self.len != 0
    }

    /// The field as an unsigned integer (1–8 bytes, big-endian).
    #[inline]
    pub fn uint(self, rec: &[u8]) -> Option<u64> {
        let off = usize::from(self.off);
        let b = rec.get(off..off + usize::from(self.len))?;
        Some(match *b {
            [] => return None,
            [a] => u64::from(a),
            [a, b] => u64::from(u16::from_be_bytes([a, b])),
            [a, b, c, d] => u64::from(u32::from_be_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => u64::from_be_bytes([a, b, c, d, e, f, g, h]),
            _ if b.len() <= 8 => b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
            _ => return None,
        })
    }

    #[inline]
    pub fn bytes(self, rec: &[u8], want: u16) -> Option<&[u8]> {
        if self.len != want {
            return None;
        }
        rec.get(usize::from(self.off)..usize::from(self.off) + usize::from(self.len))
    }
}

/// Offsets of everything levee reads from a data or options record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Layout {
    pub src4: Pos,
    pub dst4: Pos,
    pub src6: Pos,
    pub dst6: Pos,
    pub octets: Pos,
    pub packets: Pos,
    pub post_octets: Pos,
    pub post_packets: Pos,
    pub total_octets: Pos,
    pub total_packets: Pos,
    pub initiator_octets: Pos,
    pub initiator_packets: Pos,
    pub rev_octets: Pos,
    pub rev_packets: Pos,
    pub protocol: Pos,
    pub src_port: Pos,
    pub dst_port: Pos,
    pub tcp_flags: Pos,
    pub in_if: Pos,
    pub out_if: Pos,
    pub icmp_type_code4: Pos,
    pub icmp_type_code6: Pos,
    pub icmp_type4: Pos,
    pub icmp_code4: Pos,
    pub icmp_type6: Pos,
    pub icmp_code6: Pos,
    pub end_ms: Pos,
    pub end_s: Pos,
    pub end_us_ntp: Pos,
    pub end_sysup: Pos,
    pub end_delta_us: Pos,
    pub start_ms: Pos,
    pub start_s: Pos,
    pub start_us_ntp: Pos,
    pub start_sysup: Pos,
    pub start_delta_us: Pos,
    pub ttl: Pos,
    pub min_ttl: Pos,
    pub direction: Pos,
    pub frag_offset: Pos,
    pub frag_flags: Pos,
    // Sampling, in data records (Huawei) or options records.
    pub sampling_interval: Pos,
    pub sampler_random_interval: Pos,
    pub sampler_id: Pos,
    pub selector_id: Pos,
    pub packet_interval: Pos,
    pub packet_space: Pos,
    pub sampling_size: Pos,
    pub sampling_population: Pos,
    pub sampling_probability: Pos,
    pub sys_init_ms: Pos,
}

/// Where a record's flow end time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndTime {
    /// flowEndMilliseconds (153), Unix ms.
    Ms,
    /// flowEndSeconds (151).
    Seconds,
    /// flowEndMicroseconds (155), NTP format.
    NtpMicros,
    /// flowEndDeltaMicroseconds (159): age at export.
    DeltaMicros,
    /// flowEndSysUpTime / LAST_SWITCHED (21): ms of router uptime.
    SysUp,
    /// None: the export time.
    #[default]
    Export,
}

/// A field compiled for a branch-free read: one unaligned 8-byte load that
/// ends where the field ends, byte-swapped and masked to the field's width.
///
/// Reading 8 bytes that end at the field needs up to 7 bytes before the
/// record; callers guarantee them (a record never starts in the first 8
/// bytes of the buffer read). An absent field reads the 8 bytes before the
/// record with a zero mask: 0, with no branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fast {
    /// Where the field ends, from the record's start.
    end: u16,
    mask: u64,
}

impl Fast {
    pub const ABSENT: Fast = Fast { end: 0, mask: 0 };

    /// An integer field of 1–8 bytes; anything else reads as absent.
    pub fn int(p: Pos) -> Fast {
        match p.len {
            1..=7 => Fast {
                end: p.off + p.len,
                mask: (1u64 << (8 * p.len)) - 1,
            },
            8 => Fast {
                end: p.off + 8,
                mask: u64::MAX,
            },
            _ => Fast::ABSENT,
        }
    }

    /// The two halves of a 16-byte field (an IPv6 address).
    pub fn halves(p: Pos) -> [Fast; 2] {
        if p.len != 16 {
            return [Fast::ABSENT; 2];
        }
        [
            Fast::int(Pos { off: p.off, len: 8 }),
            Fast::int(Pos {
                off: p.off + 8,
                len: 8,
            }),
        ]
    }

    #[inline]
    pub fn present(self) -> bool {
        self.mask != 0
    }

    /// The field of the record starting at `at` in `buf` (0 when absent, or
    /// when `buf` is too short: never a panic).
    #[inline(always)]
    pub fn read(self, buf: &[u8], at: usize) -> u64 {
        let e = at + usize::from(self.end);
        match buf.get(e.wrapping_sub(8)..e) {
            Some(&[a, b, c, d, e, f, g, h]) => {
                u64::from_be_bytes([a, b, c, d, e, f, g, h]) & self.mask
            }
            _ => 0,
        }
    }
}

/// Where a data record's fields are read from: [`Checked`] for any record,
/// [`Window`] for most, faster.
pub trait Fields: Copy {
    fn get(self, f: Fast) -> u64;
}

/// The record at `at` in `buf`, every read bounds-checked ([`Fast::read`]).
#[derive(Debug, Clone, Copy)]
pub struct Checked<'a> {
    pub buf: &'a [u8],
    pub at: usize,
}

impl Fields for Checked<'_> {
    #[inline(always)]
    fn get(self, f: Fast) -> u64 {
        f.read(self.buf, self.at)
    }
}

/// The longest record a [`Window`] holds.
pub const WINDOW_RECORD: usize = 127;

/// A record of at most [`WINDOW_RECORD`] bytes as one array that starts 8
/// bytes before it: a field's 8-byte read then starts at the field's end
/// (masked to 7 bits, which changes nothing for such a record), so the
/// compiler sees every read in bounds and checks none. Reads give exactly
/// what [`Checked`] gives for the same record; a quarter of a NetFlow
/// v9/IPFIX record's decode time was the checks.
#[derive(Debug, Clone, Copy)]
pub struct Window<'a>(&'a [u8; 8 + WINDOW_RECORD]);

impl<'a> Window<'a> {
    /// The window for a record of `len` bytes at `at`: `None` when the
    /// record is longer than a window or `buf` does not hold the whole
    /// window (the last records of a datagram).
    #[inline(always)]
    pub fn new(buf: &'a [u8], at: usize, len: usize) -> Option<Window<'a>> {
        if len > WINDOW_RECORD {
            return None;
        }
        buf.get(at.checked_sub(8)?..)?.first_chunk().map(Window)
    }
}

impl Fields for Window<'_> {
    #[inline(always)]
    fn get(self, f: Fast) -> u64 {
        let i = usize::from(f.end) & WINDOW_RECORD;
        let b = self.0[i..].first_chunk::<8>().copied().unwrap_or_default();
        u64::from_be_bytes(b) & f.mask
    }
}

/// Everything a data record is decoded with, compiled from its [`Layout`]
/// once per template: each "this field or else that one" choice is made
/// here, so decoding a record makes none of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plan {
    pub v4: bool,
    pub v6: bool,
    pub src4: Fast,
    pub dst4: Fast,
    pub src6: [Fast; 2],
    pub dst6: [Fast; 2],
    pub packets: Fast,
    pub octets: Fast,
    pub protocol: Fast,
    pub src_port: Fast,
    pub dst_port: Fast,
    pub tcp_flags: Fast,
    pub in_if: Fast,
    pub out_if: Fast,
    pub icmp_type_code4: Fast,
    pub icmp_type_code6: Fast,
    pub icmp_type4: Fast,
    pub icmp_code4: Fast,
    pub icmp_type6: Fast,
    pub icmp_code6: Fast,
    pub end_kind: EndTime,
    pub end: Fast,
    /// The flow's start, read like `end` (absent when the template has no
    /// start of the same kind).
    pub start: Fast,
    pub ttl: Fast,
    pub direction: Fast,
    pub frag_offset: Fast,
    pub frag_flags: Fast,
    pub rev_packets: Fast,
    pub rev_octets: Fast,
    /// The record itself carries sampling fields (rate or sampler id).
    pub sampling_in_record: bool,
    /// The counters are running totals per flow (IEs 85/86), not deltas:
    /// the decoder must subtract what the flow reported before.
    pub totals: bool,
}

impl Layout {
    pub fn plan(&self) -> Plan {
        let l = self;
        let first = |ps: &[Pos]| {
            ps.iter()
                .map(|p| Fast::int(*p))
                .find(|f| f.present())
                .unwrap_or(Fast::ABSENT)
        };
        // Start and end must be read the same way for a duration to mean
        // anything: the first kind the template has both of (end alone
        // still places the flow in time).
        let pairs = [
            (EndTime::Ms, l.start_ms, l.end_ms),
            (EndTime::Seconds, l.start_s, l.end_s),
            (EndTime::NtpMicros, l.start_us_ntp, l.end_us_ntp),
            (EndTime::DeltaMicros, l.start_delta_us, l.end_delta_us),
            (EndTime::SysUp, l.start_sysup, l.end_sysup),
        ];
        let usable = |kind: EndTime, p: Pos| match kind {
            EndTime::NtpMicros if p.len != 8 => Fast::ABSENT,
            _ => Fast::int(p),
        };
        let (end_kind, end) = pairs
            .iter()
            .map(|&(k, _, e)| (k, usable(k, e)))
            .find(|(_, f)| f.present())
            .unwrap_or((EndTime::Export, Fast::ABSENT));
        let start = pairs
            .iter()
            .find(|&&(k, _, _)| k == end_kind)
            .map_or(Fast::ABSENT, |&(k, s, _)| usable(k, s));
        Plan {
            v4: l.src4.len == 4 && l.dst4.len == 4,
            v6: l.src6.len == 16 && l.dst6.len == 16,
            src4: Fast::int(l.src4),
            dst4: Fast::int(l.dst4),
            src6: Fast::halves(l.src6),
            dst6: Fast::halves(l.dst6),
            packets: first(&[
                l.packets,
                l.post_packets,
                l.initiator_packets,
                l.total_packets,
            ]),
            octets: first(&[l.octets, l.post_octets, l.initiator_octets, l.total_octets]),
            totals: [
                l.packets,
                l.post_packets,
                l.initiator_packets,
                l.octets,
                l.post_octets,
                l.initiator_octets,
            ]
            .iter()
            .all(|p| Fast::int(*p) == Fast::ABSENT)
                && (Fast::int(l.total_packets).present() || Fast::int(l.total_octets).present()),
            protocol: Fast::int(l.protocol),
            src_port: Fast::int(l.src_port),
            dst_port: Fast::int(l.dst_port),
            tcp_flags: Fast::int(l.tcp_flags),
            in_if: Fast::int(l.in_if),
            out_if: Fast::int(l.out_if),
            icmp_type_code4: Fast::int(l.icmp_type_code4),
            icmp_type_code6: Fast::int(l.icmp_type_code6),
            icmp_type4: Fast::int(l.icmp_type4),
            icmp_code4: Fast::int(l.icmp_code4),
            icmp_type6: Fast::int(l.icmp_type6),
            icmp_code6: Fast::int(l.icmp_code6),
            end_kind,
            end,
            start,
            ttl: first(&[l.ttl, l.min_ttl]),
            direction: Fast::int(l.direction),
            frag_offset: Fast::int(l.frag_offset),
            frag_flags: Fast::int(l.frag_flags),
            rev_packets: Fast::int(l.rev_packets),
            rev_octets: Fast::int(l.rev_octets),
            sampling_in_record: [
                l.sampling_interval,
                l.sampler_random_interval,
                l.sampler_id,
                l.selector_id,
                l.packet_interval,
                l.sampling_size,
                l.sampling_probability,
            ]
            .iter()
            .any(|p| p.present()),
        }
    }

    /// Maps one field at `off` to the slot it fills, if levee reads it.
    /// When a template repeats an element, the last one wins: templates of
    /// tunnelled traffic (Cisco's SRv6 and MPLS ones) list the outer
    /// header's fields first and the inner packet's after them, and the
    /// inner packet is the traffic an attack is made of.
    fn assign(&mut self, f: FieldSpec, off: u16, len: u16) {
        let pos = Pos { off, len };
        let slot = match (f.enterprise, f.ie) {
            (0, 1) => &mut self.octets,
            (0, 2) => &mut self.packets,
            (0, 4) => &mut self.protocol,
            (0, 6) => &mut self.tcp_flags,
            (0, 7) => &mut self.src_port,
            (0, 8) => &mut self.src4,
            (0, 10) => &mut self.in_if,
            (0, 11) => &mut self.dst_port,
            (0, 12) => &mut self.dst4,
            (0, 14) => &mut self.out_if,
            (0, 21) => &mut self.end_sysup,
            (0, 23) => &mut self.post_octets,
            (0, 24) => &mut self.post_packets,
            (0, 27) => &mut self.src6,
            (0, 28) => &mut self.dst6,
            (0, 32) => &mut self.icmp_type_code4,
            (0, 34) => &mut self.sampling_interval,
            (0, 48) => &mut self.sampler_id,
            (0, 50) => &mut self.sampler_random_interval,
            (0, 52) => &mut self.min_ttl,
            (0, 61) => &mut self.direction,
            (0, 85) => &mut self.total_octets,
            (0, 86) => &mut self.total_packets,
            (0, 88) => &mut self.frag_offset,
            (0, 139) => &mut self.icmp_type_code6,
            (0, 22) => &mut self.start_sysup,
            (0, 150) => &mut self.start_s,
            (0, 152) => &mut self.start_ms,
            (0, 154) => &mut self.start_us_ntp,
            (0, 158) => &mut self.start_delta_us,
            (0, 151) => &mut self.end_s,
            (0, 153) => &mut self.end_ms,
            (0, 155) => &mut self.end_us_ntp,
            (0, 159) => &mut self.end_delta_us,
            (0, 160) => &mut self.sys_init_ms,
            (0, 176) => &mut self.icmp_type4,
            (0, 177) => &mut self.icmp_code4,
            (0, 178) => &mut self.icmp_type6,
            (0, 179) => &mut self.icmp_code6,
            (0, 192) => &mut self.ttl,
            (0, 197) => &mut self.frag_flags,
            (0, 231) => &mut self.initiator_octets,
            (0, 298) => &mut self.initiator_packets,
            (0, 302) => &mut self.selector_id,
            (0, 305) => &mut self.packet_interval,
            (0, 306) => &mut self.packet_space,
            (0, 309) => &mut self.sampling_size,
            (0, 310) => &mut self.sampling_population,
            (0, 311) => &mut self.sampling_probability,
            (REVERSE_PEN, 1) => &mut self.rev_octets,
            (REVERSE_PEN, 2) => &mut self.rev_packets,
            _ => return,
        };
        if len != 0 {
            *slot = pos;
        }
    }
}

/// Whether a template describes flows or options (sampler tables, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Data,
    /// Options: the first `scope` fields are scope fields. In NetFlow v9
    /// their type is a scope type (1 system, 2 interface, …), not an element.
    Options {
        scope: u16,
        v9: bool,
    },
}

/// A template ready for decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub id: u16,
    pub kind: Kind,
    pub fields: Box<[FieldSpec]>,
    /// Record length when every field has a fixed length.
    pub fixed_len: Option<usize>,
    /// The shortest a record can be (a variable-length field counts 1).
    pub min_len: usize,
    /// Offsets for fixed-length templates (unused for variable ones).
    pub layout: Layout,
    /// The layout's choices, made once (fixed-length templates).
    pub plan: Plan,
}

/// Why a template cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateError {
    TooManyFields,
    /// Every field is empty: records would have no length.
    ZeroLength,
    /// A fixed record longer than any datagram.
    TooLong,
}

impl Template {
    pub fn new(id: u16, kind: Kind, fields: Vec<FieldSpec>) -> Result<Template, TemplateError> {
        if fields.len() > MAX_FIELDS {
            return Err(TemplateError::TooManyFields);
        }
        let varlen = fields.iter().any(|f| f.len == VARLEN);
        let min_len: usize = fields
            .iter()
            .map(|f| {
                if f.len == VARLEN {
                    1
                } else {
                    usize::from(f.len)
                }
            })
            .sum();
        if min_len == 0 {
            return Err(TemplateError::ZeroLength);
        }
        if min_len > 65_535 {
            return Err(TemplateError::TooLong);
        }
        let mut t = Template {
            id,
            kind,
            fields: fields.into_boxed_slice(),
            fixed_len: (!varlen).then_some(min_len),
            min_len,
            layout: Layout::default(),
            plan: Plan::default(),
        };
        if !varlen {
            let mut layout = Layout::default();
            let mut off = 0usize;
            for (i, f) in t.fields.iter().enumerate() {
                if t.maps(i) {
                    layout.assign(*f, off as u16, f.len);
                }
                off += usize::from(f.len);
            }
            t.layout = layout;
            t.plan = layout.plan();
        }
        Ok(t)
    }

    /// Whether field `i` is an information element levee may map (NetFlow
    /// v9 scope fields are scope types, not elements).
    #[inline]
    fn maps(&self, i: usize) -> bool {
        !matches!(self.kind, Kind::Options { scope, v9: true } if i < usize::from(scope))
    }

    /// For a variable-length template: the layout and length of the record
    /// at the start of `data`, or `None` when it does not fit.
    pub fn layout_of(&self, data: &[u8], layout: &mut Layout) -> Option<usize> {
        *layout = Layout::default();
        let mut off = 0usize;
        for (i, f) in self.fields.iter().enumerate() {
            let (start, len) = if f.len == VARLEN {
                // RFC 7011 §7: one length byte, or 255 and two more.
                let first = *data.get(off)?;
                if first < 255 {
                    (off + 1, usize::from(first))
                } else {
                    let l = u16::from_be_bytes([*data.get(off + 1)?, *data.get(off + 2)?]);
                    (off + 3, usize::from(l))
                }
            } else {
                (off, usize::from(f.len))
            };
            if start + len > data.len() || start + len > 65_535 {
                return None;
            }
            if self.maps(i) {
                layout.assign(*f, start as u16, len as u16);
            }
            off = start + len;
        }
        Some(off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(ie: u16, len: u16) -> FieldSpec {
        FieldSpec {
            ie,
            len,
            enterprise: 0,
        }
    }

    #[test]
    fn fixed_templates_have_offsets() {
        let t = Template::new(
            256,
            Kind::Data,
            vec![f(8, 4), f(12, 4), f(1, 8), f(2, 4), f(4, 1)],
        )
        .unwrap();
        assert_eq!(t.fixed_len, Some(21));
        assert_eq!(t.layout.dst4, Pos { off: 4, len: 4 });
        assert_eq!(t.layout.octets, Pos { off: 8, len: 8 });
        assert_eq!(t.layout.protocol, Pos { off: 20, len: 1 });
        let rec = [
            10, 0, 0, 1, 10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 7, 6,
        ];
        assert_eq!(t.layout.octets.uint(&rec), Some(256));
        assert_eq!(t.layout.packets.uint(&rec), Some(7));
    }

    #[test]
    fn variable_length_fields_are_walked() {
        let t = Template::new(
            300,
            Kind::Data,
            vec![f(82, VARLEN), f(12, 4), f(83, VARLEN), f(2, 2)],
        )
        .unwrap();
        assert_eq!(t.fixed_len, None);
        assert_eq!(t.min_len, 1 + 4 + 1 + 2);
        let mut rec = vec![
            3, b'e', b't', b'h', 192, 0, 2, 1, 255, 0, 2, b'x', b'y', 0, 9,
        ];
        let mut l = Layout::default();
        assert_eq!(t.layout_of(&rec, &mut l), Some(rec.len()));
        assert_eq!(l.dst4, Pos { off: 4, len: 4 });
        assert_eq!(l.packets.uint(&rec), Some(9));
        rec.truncate(12);
        assert_eq!(t.layout_of(&rec, &mut l), None);
    }

    #[test]
    fn hostile_templates_are_refused() {
        assert_eq!(
            Template::new(256, Kind::Data, vec![f(1, 0); 3]),
            Err(TemplateError::ZeroLength)
        );
        assert_eq!(
            Template::new(256, Kind::Data, vec![f(1, 4); MAX_FIELDS + 1]),
            Err(TemplateError::TooManyFields)
        );
    }

    #[test]
    fn v9_scope_types_are_not_elements() {
        // Scope type 1 (System) must not be read as IE 1 (octets).
        let t = Template::new(
            257,
            Kind::Options { scope: 1, v9: true },
            vec![f(1, 4), f(34, 4)],
        )
        .unwrap();
        assert!(!t.layout.octets.present());
        assert_eq!(t.layout.sampling_interval, Pos { off: 4, len: 4 });
    }

    proptest::proptest! {
        /// A window reads every field of a record it holds exactly as the
        /// checked read does, absent fields included.
        #[test]
        fn window_reads_what_the_checked_read_reads(
            buf in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            at in 0usize..300,
            rec_len in 1usize..200,
            fields in proptest::collection::vec((0u16..200, 0u16..10), 1..20),
        ) {
            let Some(w) = Window::new(&buf, at, rec_len) else {
                // Only a record too long, too early or too near the end has none.
                proptest::prop_assert!(
                    rec_len > WINDOW_RECORD || at < 8 || at + WINDOW_RECORD > buf.len()
                );
                return Ok(());
            };
            let c = Checked { buf: &buf, at };
            for (off, len) in fields {
                // A plan's fields lie inside its record.
                if usize::from(off + len) > rec_len {
                    continue;
                }
                let f = Fast::int(Pos { off, len });
                proptest::prop_assert_eq!(w.get(f), c.get(f), "{:?}", (off, len));
            }
            proptest::prop_assert_eq!(w.get(Fast::ABSENT), 0);
        }
    }
}
