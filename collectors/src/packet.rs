//! Parsing captured packet headers down to L4: the shared core of sFlow raw
//! packet header records and pcap input.
//!
//! Takes a link type and the captured bytes (which may be cut short by the
//! snap length or the sFlow header size) and returns a [`Packet`]: addresses,
//! protocol, ports, TCP flags, TTL, ICMP type/code, fragment state, and the
//! IP-layer length *from the IP header* — the length on the wire, not what
//! was captured. Handles Ethernet with 802.1Q/802.1ad/QinQ tags and MPLS label
//! stacks, Linux cooked v1/v2, raw IP and BSD loopback framing, IPv4 options,
//! and IPv6 extension headers including the fragment header.
//!
//! Sans-IO and allocation-free: a function of its input bytes.

use crate::record::{flags, Addr, FlowRecord};

/// How a captured frame begins (pcap LINKTYPE_* values in comments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1)
    Ethernet,
    /// LINKTYPE_LINUX_SLL (113)
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276)
    LinuxSll2,
    /// LINKTYPE_RAW (101, also DLT_RAW 12 and 14): IPv4 or IPv6 by version nibble.
    RawIp,
    /// LINKTYPE_IPV4 (228)
    Ipv4,
    /// LINKTYPE_IPV6 (229)
    Ipv6,
    /// LINKTYPE_NULL (0) and LINKTYPE_LOOP (108): 4-byte address family.
    Null,
}

impl LinkType {
    /// The link type of a pcap LINKTYPE/DLT number, if levee reads it.
    pub fn from_pcap(linktype: u32) -> Option<LinkType> {
        Some(match linktype {
            0 | 108 => LinkType::Null,
            1 => LinkType::Ethernet,
            12 | 14 | 101 => LinkType::RawIp,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }
}

/// The L3/L4 facts of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Packet {
    pub src: Addr,
    pub dst: Addr,
    /// IP-layer length from the header: IPv4 total length, IPv6 payload length + 40.
    pub ip_len: u32,
    pub protocol: u8,
    pub ttl: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// [`flags::IPV6`], [`flags::FRAGMENT`], [`flags::LATER_FRAGMENT`], [`flags::TTL_KNOWN`].
    pub flags: u8,
    /// For UDP: where the payload starts in the frame and its length per the
    /// UDP header (it may extend past the captured bytes).
    pub udp_payload: Option<(usize, usize)>,
    /// Whether the L4 header was cut off by the capture (ports unknown).
    pub l4_truncated: bool,
}

impl Packet {
    /// The packet fields of a record [`parse_into`] filled, with what it
    /// learned beyond them. Call it before `bytes` is multiplied by any
    /// sampling rate: `ip_len` is `bytes` as it was parsed.
    pub fn from_record(r: &FlowRecord, extra: Extra) -> Packet {
        Packet {
            src: r.src,
            dst: r.dst,
            ip_len: r.bytes as u32,
            protocol: r.protocol,
            ttl: r.ttl,
            src_port: r.src_port,
            dst_port: r.dst_port,
            tcp_flags: r.tcp_flags,
            icmp_type: r.icmp_type,
            icmp_code: r.icmp_code,
            flags: r.flags,
            udp_payload: extra.udp_payload,
            l4_truncated: extra.l4_truncated,
        }
    }
}

/// What [`parse_into`] learns that a [`FlowRecord`] has no field for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extra {
    /// For UDP: where the payload starts in the frame and its length per the
    /// UDP header (it may extend past the captured bytes).
    pub udp_payload: Option<(usize, usize)>,
    /// Whether the L4 header was cut off by the capture (ports unknown).
    pub l4_truncated: bool,
}

/// Why a frame gave no packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Not IP (ARP, LLDP, …): not an error of the input, just nothing to count.
    #[error("not an IP packet (ethertype {0:#06x})")]
    NotIp(u16),
    #[error("truncated {0} header")]
    Truncated(&'static str),
    #[error("bad IP header: {0}")]
    BadIp(&'static str),
}

impl PacketError {
    pub fn kind(&self) -> &'static str {
        match self {
            PacketError::NotIp(_) => "not_ip",
            PacketError::Truncated(_) => "truncated",
            PacketError::BadIp(_) => "bad_ip_header",
        }
    }
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const ETH_QINQ_OLD: u16 = 0x9100;
const ETH_MPLS: u16 = 0x8847;
const ETH_MPLS_MC: u16 = 0x8848;

#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses a frame of the given link type.
pub fn parse(link: LinkType, frame: &[u8]) -> Result<Packet, PacketError> {
    let mut r = FlowRecord::default();
    let extra = parse_into(link, frame, &mut r)?;
    Ok(Packet::from_record(&r, extra))
}

/// Parses a frame of the given link type straight into `r`, the record it
/// becomes: sets `src`, `dst`, `bytes` (the IP length, not yet multiplied by
/// any sampling rate), `protocol`, `ttl`, the ports, `tcp_flags`,
/// `icmp_type`, `icmp_code` and `flags`; leaves the other fields as they
/// are. On error `r` is left untouched: every check comes before the first
/// write.
///
/// Writing into the caller's record, rather than returning a [`Packet`] to
/// copy, is what keeps the sFlow hot path fast: a copy reads the small fields
/// back in wider loads than they were stored with, and such a load waits for
/// the stores to retire instead of being forwarded from them.
#[inline]
pub fn parse_into(link: LinkType, frame: &[u8], r: &mut FlowRecord) -> Result<Extra, PacketError> {
    match link {
        LinkType::Ethernet => ethernet(frame, r),
        LinkType::LinuxSll => {
            let proto = be16(frame, 14).ok_or(PacketError::Truncated("linux cooked"))?;
            ethertype(proto, frame, 16, r)
        }
        LinkType::LinuxSll2 => {
            let proto = be16(frame, 0).ok_or(PacketError::Truncated("linux cooked v2"))?;
            if frame.len() < 20 {
                return Err(PacketError::Truncated("linux cooked v2"));
            }
            ethertype(proto, frame, 20, r)
        }
        LinkType::RawIp => ip(frame, 0, r),
        LinkType::Ipv4 => ipv4(frame, 0, r),
        LinkType::Ipv6 => ipv6(frame, 0, r),
        LinkType::Null => {
            if frame.len() < 4 {
                return Err(PacketError::Truncated("loopback"));
            }
            // The family is in the capturing host's byte order; the IP
            // version nibble is simpler and always right.
            ip(frame, 4, r)
        }
    }
}

#[inline]
fn ethernet(frame: &[u8], r: &mut FlowRecord) -> Result<Extra, PacketError> {
    if let Some(extra) = ethernet_ip_tcp_udp(frame, r) {
        return Ok(extra);
    }
    let ethertype = be16(frame, 12).ok_or(PacketError::Truncated("ethernet"))?;
    self::ethertype(ethertype, frame, 14, r)
}

/// The frames nearly every sample and capture holds, in one straight line:
/// Ethernet with at most one 802.1Q tag, then IPv4 without options and not
/// a fragment, or IPv6 with no extension header, then a whole TCP or UDP
/// header. One length check covers every read. `None` (and `r` untouched)
/// for anything else, which the general parse below takes; where this one
/// answers, it answers the same (a property test holds the two to it).
#[inline(always)]
fn ethernet_ip_tcp_udp(frame: &[u8], r: &mut FlowRecord) -> Option<Extra> {
    use crate::record::proto::{TCP, UDP};
    // Tagged IPv4: 18 bytes of Ethernet + 20 of IPv4 + 14 of TCP.
    let b: &[u8; 52] = frame.get(..52)?.try_into().ok()?;
    let tagged = u16::from_be_bytes([b[12], b[13]]) == ETH_VLAN;
    let at = if tagged { 18 } else { 14 };
    match u16::from_be_bytes([b[at - 2], b[at - 1]]) {
        ETH_IPV4 => {
            let h = &b[at..at + 34];
            let protocol = h[9];
            // Version 4, IHL 5; no MF bit and offset 0 (DF does not matter).
            let whole = h[0] == 0x45 && u16::from_be_bytes([h[6], h[7]]) & 0x3fff == 0;
            if !whole || !matches!(protocol, TCP | UDP) {
                return None;
            }
            set_l3(
                r,
                Addr::from_v4_bits(u32::from_be_bytes([h[12], h[13], h[14], h[15]])),
                Addr::from_v4_bits(u32::from_be_bytes([h[16], h[17], h[18], h[19]])),
                u32::from(u16::from_be_bytes([h[2], h[3]])),
                protocol,
                h[8],
                flags::TTL_KNOWN,
            );
            Some(tcp_udp(&h[20..], at + 20, protocol, r))
        }
        ETH_IPV6 => {
            // Tagged: 18 + 40 of IPv6 + 14 of TCP.
            let b: &[u8; 72] = frame.get(..72)?.try_into().ok()?;
            let h = &b[at..at + 54];
            let protocol = h[6];
            if h[0] >> 4 != 6 || !matches!(protocol, TCP | UDP) {
                return None;
            }
            let half = |i: usize| u64::from_be_bytes(h[i..i + 8].try_into().unwrap_or_default());
            set_l3(
                r,
                Addr::from_v6_bits(half(8), half(16)),
                Addr::from_v6_bits(half(24), half(32)),
                u32::from(u16::from_be_bytes([h[4], h[5]])) + 40,
                protocol,
                h[7],
                flags::IPV6 | flags::TTL_KNOWN,
            );
            Some(tcp_udp(&h[40..], at + 40, protocol, r))
        }
        _ => None,
    }
}

/// The L4 part of [`ethernet_ip_tcp_udp`]: `l4` (at `at` in the frame) is
/// a slice of its fixed-size array 14 bytes long, so no index is checked.
#[inline(always)]
fn tcp_udp(l4: &[u8], at: usize, protocol: u8, r: &mut FlowRecord) -> Extra {
    let mut extra = Extra::default();
    r.src_port = u16::from_be_bytes([l4[0], l4[1]]);
    r.dst_port = u16::from_be_bytes([l4[2], l4[3]]);
    if protocol == crate::record::proto::TCP {
        r.tcp_flags = l4[13];
    } else {
        let len = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
        extra.udp_payload = Some((at + 8, len.saturating_sub(8)));
    }
    extra
}

#[inline]
fn ethertype(
    mut ethertype: u16,
    frame: &[u8],
    mut at: usize,
    r: &mut FlowRecord,
) -> Result<Extra, PacketError> {
    // Up to four stacked VLAN tags; more is not a real frame.
    for _ in 0..4 {
        if !matches!(ethertype, ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD) {
            break;
        }
        ethertype = be16(frame, at + 2).ok_or(PacketError::Truncated("802.1Q"))?;
        at += 4;
    }
    match ethertype {
        ETH_IPV4 => ipv4(frame, at, r),
        ETH_IPV6 => ipv6(frame, at, r),
        ETH_MPLS | ETH_MPLS_MC => {
            // Skip the label stack to the bottom-of-stack label (S bit), at
            // most 16 deep, then tell IPv4 from IPv6 by the version nibble.
            for _ in 0..16 {
                let s = *frame.get(at + 2).ok_or(PacketError::Truncated("MPLS"))?;
                at += 4;
                if s & 1 != 0 {
                    return ip(frame, at, r);
                }
            }
            Err(PacketError::BadIp("MPLS label stack deeper than 16"))
        }
        other => Err(PacketError::NotIp(other)),
    }
}

/// IPv4 or IPv6 by the version nibble.
fn ip(frame: &[u8], at: usize, r: &mut FlowRecord) -> Result<Extra, PacketError> {
    match frame.get(at).map(|b| b >> 4) {
        Some(4) => ipv4(frame, at, r),
        Some(6) => ipv6(frame, at, r),
        Some(_) => Err(PacketError::BadIp("version is neither 4 nor 6")),
        None => Err(PacketError::Truncated("IP")),
    }
}

/// The L3 fields every parse sets, and the L4 ones cleared for [`l4`] to fill.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn set_l3(r: &mut FlowRecord, src: Addr, dst: Addr, ip_len: u32, protocol: u8, ttl: u8, f: u8) {
    r.src = src;
    r.dst = dst;
    r.bytes = u64::from(ip_len);
    r.protocol = protocol;
    r.ttl = ttl;
    r.flags = f;
    r.src_port = 0;
    r.dst_port = 0;
    r.tcp_flags = 0;
    r.icmp_type = 0;
    r.icmp_code = 0;
}

#[inline]
fn ipv4(frame: &[u8], at: usize, r: &mut FlowRecord) -> Result<Extra, PacketError> {
    let h = frame
        .get(at..at + 20)
        .ok_or(PacketError::Truncated("IPv4"))?;
    if h[0] >> 4 != 4 {
        return Err(PacketError::BadIp("IPv4 version field is not 4"));
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(PacketError::BadIp("IPv4 header length below 20"));
    }
    let total = u16::from_be_bytes([h[2], h[3]]);
    let frag = u16::from_be_bytes([h[6], h[7]]);
    let offset = frag & 0x1fff;
    let more = frag & 0x2000 != 0;
    let mut f = flags::TTL_KNOWN;
    if offset != 0 || more {
        f |= flags::FRAGMENT;
    }
    if offset != 0 {
        f |= flags::LATER_FRAGMENT | flags::NO_L4;
    }
    set_l3(
        r,
        Addr::from_v4_bits(u32::from_be_bytes([h[12], h[13], h[14], h[15]])),
        Addr::from_v4_bits(u32::from_be_bytes([h[16], h[17], h[18], h[19]])),
        u32::from(total),
        h[9],
        h[8],
        f,
    );
    if offset != 0 {
        return Ok(Extra::default());
    }
    Ok(l4(frame, at + ihl, h[9], r))
}

/// Whether an IPv6 next header is an extension header the walk steps over
/// (and so not an upper-layer protocol).
fn is_extension(next: u8) -> bool {
    matches!(
        next,
        HOP_BY_HOP | ROUTING | FRAGMENT | AH | DEST_OPTS | MOBILITY | HIP | SHIM6
    )
}

// IPv6 extension headers (RFC 8200 §4, RFC 7045).
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AH: u8 = 51;
const DEST_OPTS: u8 = 60;
const MOBILITY: u8 = 135;
const HIP: u8 = 139;
const SHIM6: u8 = 140;

fn ipv6(frame: &[u8], at: usize, r: &mut FlowRecord) -> Result<Extra, PacketError> {
    let h = frame
        .get(at..at + 40)
        .ok_or(PacketError::Truncated("IPv6"))?;
    if h[0] >> 4 != 6 {
        return Err(PacketError::BadIp("IPv6 version field is not 6"));
    }
    let payload = u16::from_be_bytes([h[4], h[5]]);
    let half = |at: usize| {
        u64::from_be_bytes([
            h[at],
            h[at + 1],
            h[at + 2],
            h[at + 3],
            h[at + 4],
            h[at + 5],
            h[at + 6],
            h[at + 7],
        ])
    };
    let mut f = flags::IPV6 | flags::TTL_KNOWN;
    let mut next = h[6];
    let mut pos = at + 40;
    let truncated = Extra {
        udp_payload: None,
        l4_truncated: true,
    };
    let mut extra = None;
    // A bounded walk: a chain longer than this is an attack on the parser.
    for _ in 0..8 {
        match next {
            HOP_BY_HOP | ROUTING | DEST_OPTS | MOBILITY | HIP | SHIM6 => {
                let Some(ext) = frame.get(pos..pos + 2) else {
                    extra = Some(truncated);
                    break;
                };
                next = ext[0];
                pos += (usize::from(ext[1]) + 1) * 8;
            }
            AH => {
                let Some(ext) = frame.get(pos..pos + 2) else {
                    extra = Some(truncated);
                    break;
                };
                next = ext[0];
                pos += (usize::from(ext[1]) + 2) * 4;
            }
            FRAGMENT => {
                let Some(ext) = frame.get(pos..pos + 8) else {
                    extra = Some(truncated);
                    break;
                };
                next = ext[0];
                let off_m = u16::from_be_bytes([ext[2], ext[3]]);
                // An "atomic fragment" (offset 0, M clear; RFC 6946) is a
                // whole packet that happens to carry the header.
                if off_m & 0xfff9 != 0 {
                    f |= flags::FRAGMENT;
                }
                pos += 8;
                if off_m >> 3 != 0 {
                    f |= flags::LATER_FRAGMENT | flags::NO_L4;
                    extra = Some(Extra::default());
                    break;
                }
            }
            _ => break,
        }
    }
    // A chain cut off by the capture, or longer than the walk: the upper
    // layer was never reached, and `next` names an extension header.
    if extra.is_some_and(|e: Extra| e.l4_truncated) || is_extension(next) {
        f |= flags::NO_L4;
    }
    set_l3(
        r,
        Addr::from_v6_bits(half(8), half(16)),
        Addr::from_v6_bits(half(24), half(32)),
        u32::from(payload) + 40,
        next,
        h[7],
        f,
    );
    Ok(match extra {
        Some(e) => e,
        None => l4(frame, pos, next, r),
    })
}

/// Fills the L4 fields of `r` from the header at `at`, if it was captured.
#[inline]
fn l4(frame: &[u8], at: usize, protocol: u8, r: &mut FlowRecord) -> Extra {
    use crate::record::proto::{ICMP, ICMPV6, TCP, UDP};
    let l4 = frame.get(at..).unwrap_or(&[]);
    let mut extra = Extra::default();
    match protocol {
        TCP if l4.len() >= 14 => {
            r.src_port = u16::from_be_bytes([l4[0], l4[1]]);
            r.dst_port = u16::from_be_bytes([l4[2], l4[3]]);
            r.tcp_flags = l4[13];
        }
        UDP if l4.len() >= 8 => {
            r.src_port = u16::from_be_bytes([l4[0], l4[1]]);
            r.dst_port = u16::from_be_bytes([l4[2], l4[3]]);
            let len = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
            extra.udp_payload = Some((at + 8, len.saturating_sub(8)));
        }
        ICMP | ICMPV6 if l4.len() >= 2 => {
            r.icmp_type = l4[0];
            r.icmp_code = l4[1];
        }
        TCP | UDP | ICMP | ICMPV6 => {
            extra.l4_truncated = true;
            r.flags |= flags::NO_L4;
        }
        _ => {}
    }
    extra
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::proto;

    fn ipv4_udp(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&ETH_IPV4.to_be_bytes());
        let total = (20 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 1, 198, 51, 100, 7,
        ]);
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn ethernet_ipv4_udp() {
        let f = ipv4_udp(b"hello");
        let p = parse(LinkType::Ethernet, &f).unwrap();
        assert_eq!(p.src.to_string(), "192.0.2.1");
        assert_eq!(p.dst.to_string(), "198.51.100.7");
        assert_eq!(
            (p.protocol, p.src_port, p.dst_port, p.ttl, p.ip_len),
            (proto::UDP, 12345, 53, 64, 33)
        );
        assert_eq!(p.udp_payload, Some((42, 5)));
        assert_eq!(&f[42..47], b"hello");
    }

    #[test]
    fn the_ip_length_comes_from_the_header_even_when_cut_short() {
        let mut f = ipv4_udp(&[0u8; 1000]);
        f.truncate(60);
        let p = parse(LinkType::Ethernet, &f).unwrap();
        assert_eq!(p.ip_len, 1028);
    }

    #[test]
    fn vlan_and_qinq_tags_are_skipped() {
        let plain = ipv4_udp(b"");
        let mut f = plain[..12].to_vec();
        f.extend_from_slice(&[0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20]);
        f.extend_from_slice(&plain[12..]);
        let p = parse(LinkType::Ethernet, &f).unwrap();
        assert_eq!(p.dst_port, 53);
    }

    #[test]
    fn later_ipv4_fragments_have_no_ports() {
        let mut f = ipv4_udp(b"xxxxxxxx");
        f[14 + 6] = 0x00;
        f[14 + 7] = 0x10; // offset 16 × 8 bytes
        let p = parse(LinkType::Ethernet, &f).unwrap();
        assert_eq!(
            p.flags & (flags::FRAGMENT | flags::LATER_FRAGMENT),
            flags::FRAGMENT | flags::LATER_FRAGMENT
        );
        assert_eq!((p.src_port, p.dst_port), (0, 0));
    }

    #[test]
    fn ipv6_with_extension_headers_and_fragment() {
        let mut f = vec![0x60, 0, 0, 0, 0, 0, 0, 64];
        f[4..6].copy_from_slice(&(8 + 8 + 20u16).to_be_bytes());
        f[6] = HOP_BY_HOP;
        f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&[FRAGMENT, 0, 0, 0, 0, 0, 0, 0]); // hop-by-hop, 8 bytes
        f.extend_from_slice(&[proto::TCP, 0, 0, 1, 0, 0, 0, 7]); // first fragment, M=1
        f.extend_from_slice(&[
            0, 80, 1, 187, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0, 0, 0, 0, 0, 0,
        ]);
        let p = parse(LinkType::RawIp, &f).unwrap();
        assert_eq!(p.protocol, proto::TCP);
        assert_eq!((p.src_port, p.dst_port, p.tcp_flags), (80, 443, 0x02));
        assert_eq!(p.ip_len, 76);
        assert_eq!(p.flags & flags::LATER_FRAGMENT, 0);
        assert_ne!(p.flags & flags::FRAGMENT, 0);
        assert_ne!(p.flags & flags::IPV6, 0);
    }

    #[test]
    fn a_record_without_its_l4_header_says_so() {
        // A later fragment: no ports.
        let mut f = ipv4_udp(b"xxxxxxxx");
        f[14 + 7] = 0x10;
        let p = parse(LinkType::Ethernet, &f).unwrap();
        assert_ne!(p.flags & flags::NO_L4, 0);
        // A UDP header cut off by the capture.
        let whole = ipv4_udp(b"");
        let p = parse(LinkType::Ethernet, &whole[..14 + 20 + 4]).unwrap();
        assert_ne!(p.flags & flags::NO_L4, 0);
        assert_eq!((p.protocol, p.src_port), (proto::UDP, 0));
        // A whole one: the ports are real.
        let p = parse(LinkType::Ethernet, &whole).unwrap();
        assert_eq!(p.flags & flags::NO_L4, 0);
        // IPv6 whose extension-header chain runs past the sampled bytes:
        // the protocol it stops at is an extension header, not the upper
        // layer a FlowSpec rule would match.
        let mut v6 = vec![0x60, 0, 0, 0, 0, 200, DEST_OPTS, 64];
        v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        for _ in 0..3 {
            v6.extend_from_slice(&[DEST_OPTS, 4, 0, 0, 0, 0, 0, 0]);
            v6.extend_from_slice(&[0u8; 32]);
        }
        let p = parse(LinkType::RawIp, &v6).unwrap();
        assert_ne!(p.flags & flags::NO_L4, 0, "{p:?}");
        assert!(is_extension(p.protocol));
        // A chain longer than the walk: the same.
        let mut long = v6[..40].to_vec();
        for _ in 0..12 {
            long.extend_from_slice(&[DEST_OPTS, 0, 0, 0, 0, 0, 0, 0]);
        }
        let p = parse(LinkType::RawIp, &long).unwrap();
        assert_ne!(p.flags & flags::NO_L4, 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for len in 0..64 {
            let f: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            for link in [
                LinkType::Ethernet,
                LinkType::LinuxSll,
                LinkType::LinuxSll2,
                LinkType::RawIp,
                LinkType::Null,
            ] {
                let _ = parse(link, &f);
            }
        }
        assert_eq!(
            parse(LinkType::Ethernet, &[0; 10]),
            Err(PacketError::Truncated("ethernet"))
        );
    }

    /// A record with every field set, so a field a parse forgets (or one
    /// it should have left alone) shows up.
    fn sentinel() -> FlowRecord {
        FlowRecord {
            time_ms: 7,
            packets: 3,
            bytes: 5,
            src: Addr([0xa5; 16]),
            dst: Addr([0x5a; 16]),
            sampling: 9,
            src_port: 1,
            dst_port: 2,
            protocol: 0xee,
            tcp_flags: 0xaa,
            ttl: 0xcc,
            icmp_type: 0xbb,
            icmp_code: 0xdd,
            flags: 0xff,
            ..FlowRecord::default()
        }
    }

    /// Ethernet frames near the fast path's shape: tags, ethertypes, IP
    /// version bytes (and IPv4 IHL), fragment words and protocols it must
    /// take or turn down, random everything else, cut at a random length.
    fn near_fast_frame() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        (
            prop_oneof![2 => Just(None), 2 => Just(Some(ETH_VLAN)), 1 => Just(Some(ETH_QINQ))],
            prop_oneof![4 => Just(ETH_IPV4), 3 => Just(ETH_IPV6), 1 => Just(ETH_VLAN), 1 => any::<u16>()],
            prop_oneof![6 => Just(true), 1 => Just(false)],
            prop_oneof![6 => Just(0x45u8), 1 => Just(0x46), 1 => Just(0x44), 1 => any::<u8>()],
            prop_oneof![3 => Just(0u16), 3 => Just(0x4000), 1 => Just(0x2000), 1 => Just(1), 1 => any::<u16>()],
            prop_oneof![3 => Just(proto::TCP), 3 => Just(proto::UDP), 1 => Just(proto::ICMP), 1 => Just(44), 1 => any::<u8>()],
            proptest::collection::vec(any::<u8>(), 120),
            prop_oneof![3 => 52usize..130, 1 => 0usize..72],
        )
            .prop_map(|(tag, ethertype, right_version, vihl, frag, protocol, fill, cut)| {
                let mut f = fill[..12].to_vec();
                if let Some(tag) = tag {
                    f.extend_from_slice(&tag.to_be_bytes());
                    f.extend_from_slice(&fill[12..14]);
                }
                f.extend_from_slice(&ethertype.to_be_bytes());
                if ethertype == ETH_IPV6 {
                    let mut ip = fill[20..60].to_vec();
                    if right_version {
                        ip[0] = 0x60 | ip[0] & 0x0f;
                    }
                    ip[6] = protocol;
                    f.extend_from_slice(&ip);
                } else {
                    let mut ip = fill[20..40].to_vec();
                    ip[0] = vihl;
                    ip[6..8].copy_from_slice(&frag.to_be_bytes());
                    ip[9] = protocol;
                    f.extend_from_slice(&ip);
                }
                f.extend_from_slice(&fill[60..]);
                f.truncate(cut);
                f
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2048))]
        /// Where the straight-line path answers, the general parse gives
        /// the same record and extras; where it does not, it wrote nothing.
        #[test]
        fn the_fast_path_agrees_with_the_general_parse(frame in near_fast_frame()) {
            let mut fast = sentinel();
            match ethernet_ip_tcp_udp(&frame, &mut fast) {
                Some(extra) => {
                    let mut general = sentinel();
                    let ethertype = be16(&frame, 12).unwrap();
                    let want = self::ethertype(ethertype, &frame, 14, &mut general);
                    proptest::prop_assert_eq!(Ok(extra), want);
                    proptest::prop_assert_eq!(fast, general);
                }
                None => proptest::prop_assert_eq!(fast, sentinel()),
            }
        }
    }

    #[test]
    fn common_frames_take_the_fast_path() {
        let udp = ipv4_udp(&[0; 10]);
        let mut tagged = udp[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        tagged.extend_from_slice(&udp[12..]);
        for f in [&udp, &tagged] {
            let mut r = sentinel();
            assert!(ethernet_ip_tcp_udp(f, &mut r).is_some());
            assert_eq!(
                (r.protocol, r.src_port, r.dst_port),
                (proto::UDP, 12345, 53)
            );
        }
        // One byte short of a TCP header's flags: the general parse decides.
        let mut tcp = udp.clone();
        tcp[23] = proto::TCP;
        assert!(ethernet_ip_tcp_udp(&tcp, &mut sentinel()).is_some());
        assert!(ethernet_ip_tcp_udp(&tcp[..51], &mut sentinel()).is_none());
        // IPv6, no extension header, TCP: 14 + 40 + 20 bytes.
        let mut v6 = udp[..12].to_vec();
        v6.extend_from_slice(&ETH_IPV6.to_be_bytes());
        v6.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, proto::TCP, 64]);
        v6.extend_from_slice(&[0x20; 32]);
        v6.extend_from_slice(&[0x01, 0xbb, 0xc3, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x12]);
        v6.extend_from_slice(&[0; 6]);
        let mut r = sentinel();
        assert!(ethernet_ip_tcp_udp(&v6, &mut r).is_some());
        assert_eq!(
            (r.bytes, r.src_port, r.dst_port, r.tcp_flags, r.ttl, r.flags),
            (60, 443, 50000, 0x12, 64, flags::IPV6 | flags::TTL_KNOWN)
        );
    }
}
