//! Labelled scenarios for detection: each attack family as raw packets, and
//! benign traffic that must raise nothing. Every scenario is a pure function
//! of its parameters and seed.
//!
//! Rates are packets per second of capture time; packets are spread evenly
//! over each second with a little jitter, so a scenario looks like a steady
//! flood or a steady service, not bursts at second boundaries.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use levee_collectors::encode::packet::PacketSpec;

use crate::scenario::{Packet, Rng, Scenario, T0_US};

/// An attack family as the generator makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    SynFlood,
    /// SYN-ACK reflection: a vector of syn_flood.
    SynAck,
    /// TCP floods named by their flags.
    AckFlood,
    RstFlood,
    UdpFlood,
    IcmpFlood,
    /// UDP from a reflector port (53 dns, 123 ntp, 1900 ssdp, 11211
    /// memcached, 389 cldap, 19 chargen, 161 snmp, 3702 wsd, …).
    Amplification(u16),
    FragmentFlood,
    /// Another IP protocol (47 GRE, 50 ESP, 4 IPIP).
    ProtocolFlood(u8),
}

impl Family {
    /// The family (and vector) levee must name.
    pub fn expected(self) -> (&'static str, Option<&'static str>) {
        match self {
            Family::SynFlood => ("syn_flood", None),
            Family::SynAck => ("syn_flood", Some("syn_ack")),
            Family::AckFlood => ("tcp_flood", Some("ack")),
            Family::RstFlood => ("tcp_flood", Some("rst")),
            Family::UdpFlood => ("udp_flood", None),
            Family::IcmpFlood => ("icmp_flood", None),
            Family::Amplification(port) => ("amplification", Some(service(port))),
            Family::FragmentFlood => ("fragment_flood", None),
            Family::ProtocolFlood(p) => (
                "protocol_flood",
                Some(match p {
                    47 => "gre",
                    50 => "esp",
                    4 => "ipip",
                    _ => "other",
                }),
            ),
        }
    }

    pub fn all() -> Vec<Family> {
        vec![
            Family::SynFlood,
            Family::SynAck,
            Family::AckFlood,
            Family::RstFlood,
            Family::UdpFlood,
            Family::IcmpFlood,
            Family::Amplification(123),
            Family::Amplification(53),
            Family::Amplification(11211),
            Family::Amplification(1900),
            Family::FragmentFlood,
            Family::ProtocolFlood(47),
        ]
    }
}

fn service(port: u16) -> &'static str {
    match port {
        19 => "chargen",
        53 => "dns",
        123 => "ntp",
        161 => "snmp",
        389 => "cldap",
        1900 => "ssdp",
        3702 => "wsd",
        11211 => "memcached",
        _ => "other",
    }
}

/// Where an attack comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sources {
    /// A new random source for every packet, all with one TTL (one machine
    /// forging them).
    Spoofed,
    /// This many real hosts, each with its own TTL (its path length).
    Hosts(u32),
}

/// One attack on one target.
#[derive(Debug, Clone, Copy)]
pub struct Attack {
    pub family: Family,
    pub target: IpAddr,
    pub pps: u64,
    /// When the first packet goes out, after [`T0_US`].
    pub start_us: u64,
    pub duration_s: u64,
    pub sources: Sources,
}

pub fn random_v4(rng: &mut Rng) -> IpAddr {
    // Public-looking space that no test hostgroup covers.
    let a = 11 + rng.range(0, 180) as u8;
    IpAddr::V4(Ipv4Addr::new(
        a,
        rng.range(0, 256) as u8,
        rng.range(0, 256) as u8,
        rng.range(1, 255) as u8,
    ))
}

pub fn random_v6(rng: &mut Rng) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0x2a00 + rng.range(0, 0x100) as u16,
        rng.next_u64() as u16,
        rng.next_u64() as u16,
        0,
        0,
        0,
        0,
        rng.range(1, 0xffff) as u16,
    ))
}

/// A real host's TTL: an OS default (64 or 128) less its path length.
pub fn path_ttl(rng: &mut Rng) -> u8 {
    let initial = if rng.range(0, 3) == 0 { 128 } else { 64 };
    initial - rng.range(5, 28) as u8
}

/// The packets of one attack.
pub fn attack(a: &Attack, seed: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let v6 = a.target.is_ipv6();
    let hosts: Vec<(IpAddr, u8)> = match a.sources {
        Sources::Spoofed => Vec::new(),
        Sources::Hosts(n) => (0..n)
            .map(|_| {
                (
                    if v6 {
                        random_v6(&mut rng)
                    } else {
                        random_v4(&mut rng)
                    },
                    path_ttl(&mut rng),
                )
            })
            .collect(),
    };
    let total = a.pps * a.duration_s;
    let gap = 1_000_000 / a.pps.max(1);
    let mut packets = Vec::with_capacity(total as usize);
    let mut ident = 1u32;
    let mut i = 0;
    while i < total {
        let t = T0_US + a.start_us + i * gap + rng.range(0, gap.max(1));
        let (src, ttl) = match a.sources {
            Sources::Spoofed => (
                if v6 {
                    random_v6(&mut rng)
                } else {
                    random_v4(&mut rng)
                },
                57,
            ),
            Sources::Hosts(_) => hosts[rng.range(0, hosts.len() as u64) as usize],
        };
        let sport = rng.range(1024, 65_535) as u16;
        let dport = rng.range(1, 65_535) as u16;
        ident = ident.wrapping_add(1);
        let base = |spec: PacketSpec| PacketSpec { ttl, ident, ..spec };
        let spec = match a.family {
            Family::SynFlood => base(PacketSpec {
                tcp_flags: 0x02,
                ip_len: if v6 { 80 } else { 60 },
                ..PacketSpec::tcp(src, a.target, sport, *rng_pick(&mut rng, &[80, 443]))
            }),
            Family::SynAck => base(PacketSpec {
                tcp_flags: 0x12,
                ip_len: if v6 { 80 } else { 60 },
                ..PacketSpec::tcp(src, a.target, *rng_pick(&mut rng, &[80, 443, 22]), dport)
            }),
            Family::AckFlood => base(PacketSpec {
                tcp_flags: 0x10,
                ip_len: if v6 { 72 } else { 52 },
                ..PacketSpec::tcp(src, a.target, sport, dport)
            }),
            Family::RstFlood => base(PacketSpec {
                tcp_flags: 0x04,
                ip_len: if v6 { 72 } else { 52 },
                ..PacketSpec::tcp(src, a.target, sport, dport)
            }),
            Family::UdpFlood => base(PacketSpec::udp(src, a.target, sport, dport, 512)),
            Family::IcmpFlood => base(PacketSpec::icmp(
                src,
                a.target,
                if v6 { 128 } else { 8 },
                0,
                1000,
            )),
            Family::Amplification(port) => {
                let len = match port {
                    123 => 468,
                    1900 => 320,
                    11211 => 1400,
                    19 => 1000,
                    _ => 1400,
                };
                base(PacketSpec::udp(src, a.target, port, dport, len))
            }
            Family::FragmentFlood => base(PacketSpec {
                fragment: Some((rng.range(1, 44) as u16 * 185, true)),
                ..PacketSpec::udp(src, a.target, sport, dport, 1500)
            }),
            Family::ProtocolFlood(p) => base(PacketSpec {
                protocol: p,
                src_port: 0,
                dst_port: 0,
                tcp_flags: 0,
                ip_len: 512,
                ..PacketSpec::tcp(src, a.target, 0, 0)
            }),
        };
        packets.push(Packet { time_us: t, spec });
        i += 1;
    }
    packets.sort_by_key(|p| p.time_us);
    Scenario {
        name: format!("{:?}", a.family).to_lowercase(),
        packets,
    }
}

fn rng_pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    rng.pick(items)
}

/// A Poisson draw with mean `lambda` (Knuth's method for small means, a
/// rounded normal for large ones).
fn poisson(rng: &mut Rng, lambda: f64) -> u64 {
    let uniform = |rng: &mut Rng| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    if lambda > 50.0 {
        // Box–Muller.
        let (u1, u2) = (uniform(rng).max(1e-12), uniform(rng));
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        return (lambda + z * lambda.sqrt()).round().max(0.0) as u64;
    }
    let l = (-lambda).exp();
    let (mut k, mut p) = (0u64, 1.0);
    loop {
        p *= uniform(rng);
        if p <= l {
            return k;
        }
        k += 1;
    }
}

/// Only the packets 1-in-`rate` sampling would keep of steady traffic at
/// `pps` for `seconds` (each second a Poisson number of them, at random
/// times): what an agent exports, made without making the rest.
fn steady_sampled(
    seconds: u64,
    pps: u64,
    rate: u32,
    rng: &mut Rng,
    mut make: impl FnMut(&mut Rng) -> PacketSpec,
) -> Vec<Packet> {
    let lambda = pps as f64 / f64::from(rate.max(1));
    let mut out = Vec::new();
    for s in 0..seconds {
        for _ in 0..poisson(rng, lambda) {
            out.push(Packet {
                time_us: T0_US + s * 1_000_000 + rng.range(0, 1_000_000),
                spec: make(rng),
            });
        }
    }
    out.sort_by_key(|p| p.time_us);
    out
}

/// [`benign`] as 1-in-`rate` sampling sees it, for long stretches: the
/// samples only (export them with [`crate::export::sflow_presampled`]).
pub fn benign_sampled(
    target4: IpAddr,
    target6: IpAddr,
    seconds: u64,
    rate: u32,
    seed: u64,
) -> Scenario {
    let mut rng = Rng::new(seed);
    let clients: Vec<IpAddr> = (0..3000).map(|_| random_v4(&mut rng)).collect();
    let clients6: Vec<IpAddr> = (0..500).map(|_| random_v6(&mut rng)).collect();
    let auth: Vec<IpAddr> = (0..200).map(|_| random_v6(&mut rng)).collect();
    let peer = random_v4(&mut rng);
    let mut packets = steady_sampled(seconds, 4_000, rate, &mut rng, |r| {
        let flags = *r.pick(&[0x02u8, 0x10, 0x18, 0x10, 0x10, 0x11]);
        PacketSpec {
            tcp_flags: flags,
            ttl: path_ttl(r),
            ip_len: if flags == 0x18 { 600 } else { 52 },
            ..PacketSpec::tcp(
                *r.pick(&clients),
                target4,
                r.range(1024, 65_000) as u16,
                443,
            )
        }
    });
    packets.extend(steady_sampled(seconds, 12_500, rate, &mut rng, |_| {
        PacketSpec {
            tcp_flags: 0x18,
            ip_len: 1500,
            ttl: 52,
            ..PacketSpec::tcp(peer, target4, 50_000, 22)
        }
    }));
    packets.extend(steady_sampled(seconds, 6_000, rate, &mut rng, |r| {
        PacketSpec::udp(
            *r.pick(&auth),
            target6,
            53,
            r.range(1024, 65_000) as u16,
            r.range(80, 500) as u16,
        )
    }));
    packets.extend(steady_sampled(seconds, 35_000, rate, &mut rng, |r| {
        let flags = *r.pick(&[0x02u8, 0x10, 0x18]);
        PacketSpec {
            tcp_flags: flags,
            ip_len: if flags == 0x18 { 500 } else { 72 },
            ttl: path_ttl(r),
            ..PacketSpec::tcp(
                *r.pick(&clients6),
                target6,
                r.range(1024, 65_000) as u16,
                443,
            )
        }
    }));
    packets.sort_by_key(|p| p.time_us);
    Scenario {
        name: format!("benign-1:{rate}"),
        packets,
    }
}

/// Steady traffic at `pps` for `seconds`, one packet at a time from `make`.
fn steady(
    seconds: u64,
    pps: u64,
    rng: &mut Rng,
    mut make: impl FnMut(&mut Rng) -> PacketSpec,
) -> Vec<Packet> {
    let gap = 1_000_000 / pps.max(1);
    (0..seconds * pps)
        .map(|i| Packet {
            time_us: T0_US + i * gap + rng.range(0, gap.max(1)),
            spec: make(rng),
        })
        .collect()
}

/// Benign traffic that must raise no incident at the default thresholds
/// (50 kpps, 200 Mbit/s per host): web servers with many clients, a large
/// TCP transfer, a DNS resolver, and a flash crowd just under the limits.
pub fn benign(target4: IpAddr, target6: IpAddr, seconds: u64, seed: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let clients: Vec<IpAddr> = (0..3000).map(|_| random_v4(&mut rng)).collect();
    let clients6: Vec<IpAddr> = (0..500).map(|_| random_v6(&mut rng)).collect();
    let mut packets = Vec::new();
    // A web server: 4,000 pps of requests and ACKs from 3,000 clients.
    let mut trng = Rng::new(seed ^ 7);
    let ttls: Vec<u8> = clients.iter().map(|_| path_ttl(&mut trng)).collect();
    packets.extend(steady(seconds, 4_000, &mut rng, |r| {
        let i = r.range(0, clients.len() as u64) as usize;
        let flags = *r.pick(&[0x02u8, 0x10, 0x18, 0x10, 0x10, 0x11]);
        PacketSpec {
            tcp_flags: flags,
            ttl: ttls[i],
            ip_len: if flags == 0x18 { 600 } else { 52 },
            ..PacketSpec::tcp(clients[i], target4, r.range(1024, 65_000) as u16, 443)
        }
    }));
    // A large TCP transfer into the same host: 150 Mbit/s of full segments.
    let peer = random_v4(&mut rng);
    packets.extend(steady(seconds, 12_500, &mut rng, |_| PacketSpec {
        tcp_flags: 0x18,
        ip_len: 1500,
        ttl: 52,
        ..PacketSpec::tcp(peer, target4, 50_000, 22)
    }));
    // A DNS resolver (IPv6): 6,000 answers per second from authoritative servers.
    let auth: Vec<IpAddr> = (0..200).map(|_| random_v6(&mut rng)).collect();
    packets.extend(steady(seconds, 6_000, &mut rng, |r| {
        PacketSpec::udp(
            *r.pick(&auth),
            target6,
            53,
            r.range(1024, 65_000) as u16,
            r.range(80, 500) as u16,
        )
    }));
    // A flash crowd on the IPv6 host: 35,000 pps of new visitors (SYN, GET, ACK).
    packets.extend(steady(seconds, 35_000, &mut rng, |r| {
        let flags = *r.pick(&[0x02u8, 0x10, 0x18]);
        PacketSpec {
            tcp_flags: flags,
            ip_len: if flags == 0x18 { 500 } else { 72 },
            ttl: path_ttl(r),
            ..PacketSpec::tcp(
                *r.pick(&clients6),
                target6,
                r.range(1024, 65_000) as u16,
                443,
            )
        }
    }));
    packets.sort_by_key(|p| p.time_us);
    Scenario {
        name: "benign".into(),
        packets,
    }
}

/// Light background web traffic to `target` (kept under any threshold),
/// so attacks are not alone on the wire.
pub fn background(target: IpAddr, seconds: u64, seed: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let clients: Vec<IpAddr> = (0..50)
        .map(|_| {
            if target.is_ipv6() {
                random_v6(&mut rng)
            } else {
                random_v4(&mut rng)
            }
        })
        .collect();
    let packets = steady(seconds, 100, &mut rng, |r| PacketSpec {
        tcp_flags: 0x18,
        ip_len: 400,
        ..PacketSpec::tcp(*r.pick(&clients), target, r.range(1024, 65_000) as u16, 443)
    });
    Scenario {
        name: "background".into(),
        packets,
    }
}

/// Several scenarios as one capture.
pub fn merge(parts: Vec<Scenario>) -> Scenario {
    let name = parts
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join("+");
    let mut packets: Vec<Packet> = parts.into_iter().flat_map(|s| s.packets).collect();
    packets.sort_by_key(|p| p.time_us);
    Scenario { name, packets }
}
