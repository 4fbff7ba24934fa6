//! Scenarios: packets with capture times, and what they add up to.
//!
//! Every scenario is a pure function of its seed: the same seed gives the
//! same bytes on every machine (the random numbers come from SplitMix64, not
//! a library whose algorithm may change).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use levee_collectors::encode::packet::{self, PacketSpec};
use levee_collectors::encode::pcap::{PcapWriter, LINKTYPE_ETHERNET};

/// A deterministic random source (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64) as usize]
    }
}

/// One packet of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Capture time, Unix µs.
    pub time_us: u64,
    pub spec: PacketSpec,
}

/// Packets and bytes addressed to one host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
}

/// A named, labelled sequence of packets.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub packets: Vec<Packet>,
}

impl Scenario {
    /// Ground truth: per destination, packets and IP-layer bytes.
    pub fn truth(&self) -> BTreeMap<IpAddr, Totals> {
        let mut t: BTreeMap<IpAddr, Totals> = BTreeMap::new();
        for p in &self.packets {
            let e = t.entry(p.spec.dst).or_default();
            e.packets += 1;
            e.bytes += u64::from(p.spec.ip_len);
        }
        t
    }

    /// Appends `count` small UDP packets to `dst`, 1 ms apart, after the last
    /// packet: filler that an exporter which loses its last datagram can
    /// lose instead of the traffic under test.
    pub fn append_sentinel(&mut self, dst: IpAddr, count: u64) {
        let end = self.packets.last().map_or(T0_US, |p| p.time_us);
        let src = if dst.is_ipv4() {
            v4(198, 51, 100, 254)
        } else {
            v6(0xfe, 1)
        };
        for i in 0..count {
            self.packets.push(Packet {
                time_us: end + 1_000 * (i + 1),
                spec: PacketSpec::udp(src, dst, 9, 9, 64),
            });
        }
    }

    /// Writes the packets as an Ethernet pcap, each frame complete.
    pub fn write_pcap(&self, path: &Path) -> std::io::Result<()> {
        self.write_pcap_snap(path, 65_535)
    }

    /// Writes the packets as an Ethernet pcap cut at `snaplen` bytes, as a
    /// mirror-port capture with a snap length would (the IP header still
    /// tells each packet's real length).
    pub fn write_pcap_snap(&self, path: &Path, snaplen: usize) -> std::io::Result<()> {
        let f = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut w = PcapWriter::new(f, LINKTYPE_ETHERNET, snaplen as u32)?;
        let mut frame = Vec::with_capacity(9_000);
        for p in &self.packets {
            frame.clear();
            packet::ethernet(&p.spec, snaplen.saturating_sub(14), &mut frame);
            let wire = usize::from(p.spec.ip_len) + 14 + if p.spec.vlan.is_some() { 4 } else { 0 };
            w.write(p.time_us, &frame, wire)?;
        }
        w.into_inner().flush()
    }
}

/// Capture time of the first packet of every scenario: 2023-11-14T22:13:20Z.
pub const T0_US: u64 = 1_700_000_000_000_000;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(last: u16, net: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, last))
}

/// Splits an IP packet into fragments of at most `mtu` bytes of IP packet
/// (the payload of each but the last a multiple of 8, as IP requires).
fn fragments(p: PacketSpec, mtu: u16) -> Vec<PacketSpec> {
    let header: u16 = if p.src.is_ipv4() { 20 } else { 48 };
    let payload = p.ip_len - if p.src.is_ipv4() { 20 } else { 40 };
    let chunk = ((mtu - header) / 8) * 8;
    let mut out = Vec::new();
    let mut off = 0u16;
    while off < payload {
        let n = chunk.min(payload - off);
        let more = off + n < payload;
        out.push(PacketSpec {
            ip_len: header + n,
            fragment: Some((off / 8, more)),
            ..p
        });
        off += n;
    }
    out
}

/// Mixed benign traffic for checking exporters: several hosts, TCP, UDP and
/// ICMP, IPv4 and IPv6, IP fragments — about 4,000 packets over 20 seconds.
pub fn mixed(seed: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let servers4: Vec<IpAddr> = (10..15).map(|d| v4(192, 0, 2, d)).collect();
    let clients4: Vec<IpAddr> = (1..41).map(|d| v4(198, 51, 100, d)).collect();
    let servers6: Vec<IpAddr> = (0x10..0x13).map(|d| v6(d, 0)).collect();
    let clients6: Vec<IpAddr> = (1..21).map(|d| v6(d, 1)).collect();
    let mut packets = Vec::new();
    let mut t = T0_US;
    let mut ident = 1u32;
    let push = |t: u64, spec: PacketSpec, packets: &mut Vec<Packet>| {
        packets.push(Packet { time_us: t, spec })
    };

    for conv in 0..240u64 {
        t += rng.range(20_000, 120_000);
        let v6fam = rng.range(0, 4) == 0;
        let (server, client) = if v6fam {
            (*rng.pick(&servers6), *rng.pick(&clients6))
        } else {
            (*rng.pick(&servers4), *rng.pick(&clients4))
        };
        let cport = rng.range(1024, 65_000) as u16;
        let ttl = if v6fam { 64 } else { rng.range(40, 128) as u8 };
        ident = ident.wrapping_add(1);
        match conv % 6 {
            // A TCP exchange: handshake, a few data segments each way, close.
            0..=2 => {
                let port = *rng.pick(&[80u16, 443, 22]);
                let c2s = PacketSpec {
                    ttl,
                    ident,
                    ..PacketSpec::tcp(client, server, cport, port)
                };
                let s2c = PacketSpec {
                    ttl: 64,
                    ident,
                    ..PacketSpec::tcp(server, client, port, cport)
                };
                push(
                    t,
                    PacketSpec {
                        tcp_flags: 0x02,
                        ..c2s
                    },
                    &mut packets,
                );
                push(
                    t + 300,
                    PacketSpec {
                        tcp_flags: 0x12,
                        ..s2c
                    },
                    &mut packets,
                );
                push(
                    t + 600,
                    PacketSpec {
                        tcp_flags: 0x10,
                        ..c2s
                    },
                    &mut packets,
                );
                let segments = rng.range(2, 12);
                for i in 0..segments {
                    let len = rng.range(200, 1500) as u16;
                    push(
                        t + 1_000 + i * 500,
                        PacketSpec {
                            tcp_flags: 0x18,
                            ip_len: len,
                            ..s2c
                        },
                        &mut packets,
                    );
                    push(
                        t + 1_200 + i * 500,
                        PacketSpec {
                            tcp_flags: 0x10,
                            ..c2s
                        },
                        &mut packets,
                    );
                }
                let end = t + 1_000 + segments * 500;
                push(
                    end,
                    PacketSpec {
                        tcp_flags: 0x11,
                        ..c2s
                    },
                    &mut packets,
                );
                push(
                    end + 300,
                    PacketSpec {
                        tcp_flags: 0x11,
                        ..s2c
                    },
                    &mut packets,
                );
            }
            // DNS-like UDP query and answer.
            3 => {
                let q = PacketSpec {
                    ttl,
                    ident,
                    ..PacketSpec::udp(client, server, cport, 53, rng.range(60, 90) as u16)
                };
                let a = PacketSpec::udp(server, client, 53, cport, rng.range(100, 500) as u16);
                push(t, q, &mut packets);
                push(t + 800, a, &mut packets);
            }
            // ICMP echo request and reply.
            4 => {
                let echo = if v6fam { 128 } else { 8 };
                let reply = if v6fam { 129 } else { 0 };
                let len = rng.range(84, 1000) as u16;
                push(
                    t,
                    PacketSpec {
                        ttl,
                        ident,
                        ..PacketSpec::icmp(client, server, echo, 0, len)
                    },
                    &mut packets,
                );
                push(
                    t + 500,
                    PacketSpec::icmp(server, client, reply, 0, len),
                    &mut packets,
                );
            }
            // A large UDP datagram, fragmented.
            _ => {
                let big = PacketSpec {
                    ttl,
                    ident,
                    ..PacketSpec::udp(client, server, cport, 4500, rng.range(2_000, 4_000) as u16)
                };
                for (i, f) in fragments(big, 1_500).into_iter().enumerate() {
                    push(t + i as u64 * 50, f, &mut packets);
                }
            }
        }
    }
    packets.sort_by_key(|p| p.time_us);
    Scenario {
        name: "mixed".to_owned(),
        packets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use levee_collectors::record::proto;

    #[test]
    fn scenarios_are_reproducible() {
        let a = mixed(7);
        let b = mixed(7);
        assert_eq!(a.packets, b.packets);
        assert_ne!(mixed(8).packets, a.packets);
    }

    #[test]
    fn the_mixed_scenario_has_what_it_promises() {
        let s = mixed(1);
        let has = |f: &dyn Fn(&PacketSpec) -> bool| s.packets.iter().any(|p| f(&p.spec));
        assert!(has(&|p| p.protocol == proto::TCP && p.dst.is_ipv4()));
        assert!(has(&|p| p.protocol == proto::TCP && p.dst.is_ipv6()));
        assert!(has(&|p| p.protocol == proto::UDP));
        assert!(has(&|p| p.protocol == proto::ICMP));
        assert!(has(&|p| p.protocol == proto::ICMPV6));
        assert!(has(
            &|p| matches!(p.fragment, Some((off, _)) if off > 0) && p.dst.is_ipv4()
        ));
        assert!(has(
            &|p| matches!(p.fragment, Some((off, _)) if off > 0) && p.dst.is_ipv6()
        ));
        assert!(s.truth().len() > 30);
    }
}
