//! Builds captured-packet bytes: Ethernet (optionally 802.1Q-tagged) or raw
//! IP, IPv4 or IPv6, and a TCP, UDP or ICMP header, padded with zeros up to
//! the packet's IP length or a snap length, whichever is shorter.

use std::net::IpAddr;

use crate::record::proto;

/// What one packet looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketSpec {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    pub ttl: u8,
    /// IP-layer length: the IPv4 total length, or IPv6 payload length + 40.
    pub ip_len: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// `Some((offset in 8-byte units, more fragments))` for an IP fragment.
    pub fragment: Option<(u16, bool)>,
    pub vlan: Option<u16>,
    /// IPv4 identification / IPv6 fragment id.
    pub ident: u32,
    /// IPv6 only: this many 8-byte destination-options headers before the
    /// upper layer (a long chain pushes the L4 header past a sampled
    /// header's end).
    pub ext_headers: u8,
}

impl PacketSpec {
    /// A TCP packet with sensible defaults (TTL 64, 60 bytes, ACK).
    pub fn tcp(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> PacketSpec {
        PacketSpec {
            src,
            dst,
            protocol: proto::TCP,
            src_port,
            dst_port,
            tcp_flags: 0x10,
            ttl: 64,
            ip_len: if dst.is_ipv4() { 60 } else { 80 },
            icmp_type: 0,
            icmp_code: 0,
            fragment: None,
            vlan: None,
            ident: 1,
            ext_headers: 0,
        }
    }

    pub fn udp(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16, ip_len: u16) -> PacketSpec {
        PacketSpec {
            protocol: proto::UDP,
            tcp_flags: 0,
            ip_len,
            ..PacketSpec::tcp(src, dst, src_port, dst_port)
        }
    }

    pub fn icmp(src: IpAddr, dst: IpAddr, icmp_type: u8, icmp_code: u8, ip_len: u16) -> PacketSpec {
        PacketSpec {
            protocol: if dst.is_ipv4() {
                proto::ICMP
            } else {
                proto::ICMPV6
            },
            src_port: 0,
            dst_port: 0,
            tcp_flags: 0,
            icmp_type,
            icmp_code,
            ip_len,
            ..PacketSpec::tcp(src, dst, 0, 0)
        }
    }

    fn ip_header_len(&self) -> usize {
        match (self.src, self.fragment) {
            (IpAddr::V4(_), _) => 20,
            (IpAddr::V6(_), Some(_)) => 48 + 8 * usize::from(self.ext_headers),
            (IpAddr::V6(_), None) => 40 + 8 * usize::from(self.ext_headers),
        }
    }

    fn l4_header_len(&self) -> usize {
        if matches!(self.fragment, Some((off, _)) if off > 0) {
            return 0;
        }
        match self.protocol {
            proto::TCP => 20,
            proto::UDP => 8,
            proto::ICMP | proto::ICMPV6 => 8,
            _ => 0,
        }
    }
}

/// Appends an Ethernet frame carrying `p`, cut at `snap` bytes of IP packet.
pub fn ethernet(p: &PacketSpec, snap: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
    if let Some(vlan) = p.vlan {
        out.extend_from_slice(&[0x81, 0x00]);
        out.extend_from_slice(&(vlan & 0x0fff).to_be_bytes());
    }
    out.extend_from_slice(if p.src.is_ipv4() {
        &[0x08, 0x00]
    } else {
        &[0x86, 0xdd]
    });
    ip(p, snap, out);
}

/// Appends the IP packet `p` (no link header), cut at `snap` bytes.
pub fn ip(p: &PacketSpec, snap: usize, out: &mut Vec<u8>) {
    let start = out.len();
    let hl = p.ip_header_len();
    match (p.src, p.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let (off, more) = p.fragment.unwrap_or((0, false));
            let frag = (off & 0x1fff) | if more { 0x2000 } else { 0 };
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&p.ip_len.to_be_bytes());
            out.extend_from_slice(&(p.ident as u16).to_be_bytes());
            out.extend_from_slice(&frag.to_be_bytes());
            out.extend_from_slice(&[p.ttl, p.protocol, 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let sum = checksum(&out[start..start + 20]);
            out[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
        }
        (s, d) => {
            let s = match s {
                IpAddr::V6(v) => v.octets(),
                IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
            };
            let d = match d {
                IpAddr::V6(v) => v.octets(),
                IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
            };
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&p.ip_len.saturating_sub(40).to_be_bytes());
            let after_options = if p.fragment.is_some() { 44 } else { p.protocol };
            out.push(if p.ext_headers > 0 { 60 } else { after_options });
            out.push(p.ttl);
            out.extend_from_slice(&s);
            out.extend_from_slice(&d);
            for i in 0..p.ext_headers {
                // Destination options, 8 bytes: next header, length 0, PadN.
                let next = if i + 1 < p.ext_headers {
                    60
                } else {
                    after_options
                };
                out.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
            }
            if let Some((off, more)) = p.fragment {
                out.extend_from_slice(&[p.protocol, 0]);
                out.extend_from_slice(&((off << 3) | u16::from(more)).to_be_bytes());
                out.extend_from_slice(&p.ident.to_be_bytes());
            }
        }
    }
    let l4 = p.l4_header_len();
    let l4_start = out.len();
    match l4 {
        20 => {
            out.extend_from_slice(&p.src_port.to_be_bytes());
            out.extend_from_slice(&p.dst_port.to_be_bytes());
            out.extend_from_slice(&[
                0,
                0,
                0,
                1,
                0,
                0,
                0,
                0,
                0x50,
                p.tcp_flags,
                0xff,
                0xff,
                0,
                0,
                0,
                0,
            ]);
        }
        8 if p.protocol == proto::UDP => {
            out.extend_from_slice(&p.src_port.to_be_bytes());
            out.extend_from_slice(&p.dst_port.to_be_bytes());
            let ulen = usize::from(p.ip_len).saturating_sub(hl) as u16;
            out.extend_from_slice(&ulen.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
        8 => out.extend_from_slice(&[p.icmp_type, p.icmp_code, 0, 0, 0, 0, 0, 0]),
        _ => {}
    }
    debug_assert_eq!(out.len() - l4_start, l4);
    // Zero payload up to the IP length, but no further than the snap length.
    let want = usize::from(p.ip_len).max(hl + l4).min(snap.max(hl + l4));
    out.resize(start + want, 0);
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
