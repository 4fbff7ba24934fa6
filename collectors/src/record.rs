//! [`FlowRecord`]: the one compact record every flow source becomes.
//!
//! A `FlowRecord` is `Copy`, 96 bytes, with no pointers, so decoders write
//! them into a caller's reused buffer and rings move them by value. Counts are
//! estimates of real traffic: packet and byte counts are already multiplied
//! by the sampling rate (IN-6), and bytes are IP-layer bytes for every source
//! (the IP total length; IPv6 payload length + 40).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 address in 16 bytes; IPv4 is stored IPv4-mapped
/// (`::ffff:a.b.c.d`) and [`FlowRecord::flags`] says which family it is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct Addr(pub [u8; 16]);

impl Addr {
    pub const UNSPECIFIED: Addr = Addr([0; 16]);

    #[inline]
    pub const fn v4(octets: [u8; 4]) -> Addr {
        let [a, b, c, d] = octets;
        Addr([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d])
    }

    #[inline]
    pub const fn v6(octets: [u8; 16]) -> Addr {
        Addr(octets)
    }

    /// IPv4 from its 32-bit value (one 16-byte store, not sixteen).
    #[inline]
    pub const fn from_v4_bits(ip: u32) -> Addr {
        Addr(((0xffff_u128 << 32) | ip as u128).to_be_bytes())
    }

    /// IPv6 from its two 64-bit halves.
    #[inline]
    pub const fn from_v6_bits(hi: u64, lo: u64) -> Addr {
        Addr((((hi as u128) << 64) | lo as u128).to_be_bytes())
    }

    /// Whether this is an IPv4-mapped address.
    #[inline]
    pub fn is_v4_mapped(&self) -> bool {
        self.0[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
    }

    /// The address, IPv4 when it is IPv4-mapped.
    pub fn ip(&self) -> IpAddr {
        if self.is_v4_mapped() {
            IpAddr::V4(Ipv4Addr::new(
                self.0[12], self.0[13], self.0[14], self.0[15],
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.0))
        }
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Addr {
        match ip {
            IpAddr::V4(v4) => Addr::v4(v4.octets()),
            IpAddr::V6(v6) => Addr::v6(v6.octets()),
        }
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.ip(), f)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.ip(), f)
    }
}

/// Bits of [`FlowRecord::flags`].
pub mod flags {
    /// Source and destination are IPv6 (otherwise IPv4-mapped IPv4).
    pub const IPV6: u8 = 1 << 0;
    /// The packet is an IP fragment (first or later).
    pub const FRAGMENT: u8 = 1 << 1;
    /// A fragment other than the first: no L4 header, ports are 0.
    pub const LATER_FRAGMENT: u8 = 1 << 2;
    /// `ttl` holds a real value (TTL / hop limit seen in a header).
    pub const TTL_KNOWN: u8 = 1 << 3;
    /// The direction is known; see [`EGRESS`].
    pub const DIRECTION_KNOWN: u8 = 1 << 4;
    /// Egress at the observation point (ingress when clear).
    pub const EGRESS: u8 = 1 << 5;
    /// The L4 header was not seen — a later fragment, a header cut off by
    /// the capture or sample length, an IPv6 extension-header chain that
    /// does not reach the upper layer: ports and TCP flags are unknown (0
    /// here means nothing), and for IPv6 `protocol` may be an extension
    /// header, not the upper-layer protocol a FlowSpec rule matches.
    pub const NO_L4: u8 = 1 << 6;
    /// From an exporter levee does not trust to move routes (no allow-list
    /// and `trust_any_exporter` off): counted and alerted on, never the
    /// ground for a mitigation.
    pub const UNTRUSTED: u8 = 1 << 7;
}

/// One flow (or one sampled packet) as levee accounts it.
///
/// Aligned to 32 bytes (its size, 96, is a multiple): in a decoder's
/// output buffer every record then starts on a 32-byte boundary, so the
/// vector stores that write whole 32-byte pieces of it never straddle a
/// cache line, whatever address the buffer got.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
#[repr(C, align(32))]
pub struct FlowRecord {
    /// Observation time, Unix milliseconds: the flow's end (NetFlow/IPFIX), the
    /// sample's arrival (sFlow), or the packet's capture time (pcap).
    pub time_ms: u64,
    /// Estimated packets (sampled count × sampling rate).
    pub packets: u64,
    /// Estimated IP-layer bytes (sampled count × sampling rate).
    pub bytes: u64,
    pub src: Addr,
    pub dst: Addr,
    /// The exporter's address (the datagram's source, or the sFlow agent).
    pub exporter: Addr,
    /// The sampling rate the counts were multiplied by (1 = unsampled).
    pub sampling: u32,
    pub in_if: u32,
    pub out_if: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    /// TCP flags (OR of all packets of the flow), 0 for other protocols.
    pub tcp_flags: u8,
    /// TTL or hop limit when [`flags::TTL_KNOWN`] is set.
    pub ttl: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// See [`flags`].
    pub flags: u8,
    /// How long the flow lasted, whole seconds (0: a single packet or
    /// sample, or not known). Lets accounting tell a burst from a long flow
    /// reported at once.
    pub duration_s: u16,
}

impl FlowRecord {
    #[inline]
    pub fn is_ipv6(&self) -> bool {
        self.flags & flags::IPV6 != 0
    }

    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags & flags::FRAGMENT != 0
    }

    #[inline]
    pub fn ttl(&self) -> Option<u8> {
        (self.flags & flags::TTL_KNOWN != 0).then_some(self.ttl)
    }
}

/// IP protocol numbers levee names.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const GRE: u8 = 47;
    pub const ESP: u8 = 50;
    pub const ICMPV6: u8 = 58;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_small_and_copy() {
        assert_eq!(std::mem::size_of::<FlowRecord>(), 96);
        fn is_copy<T: Copy>() {}
        is_copy::<FlowRecord>();
    }

    #[test]
    fn addresses_keep_their_family() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(Addr::from(v4).ip(), v4);
        assert_eq!(Addr::from(v6).ip(), v6);
        assert!(Addr::from(v4).is_v4_mapped());
    }
}
