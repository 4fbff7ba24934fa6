//! Attacks an attacker shapes to make a collector build the wrong rule, each
//! beside the legitimate traffic the rule must spare: labelled, so a test
//! can hold the rules a router received against both.

use std::net::IpAddr;

use levee_collectors::encode::packet::PacketSpec;

use crate::attacks::{path_ttl, random_v4, random_v6};
use crate::scenario::{Packet, Rng, Scenario, T0_US};

/// One shaped attack on one host.
#[derive(Debug, Clone)]
pub struct Shaped {
    pub name: &'static str,
    pub target: IpAddr,
    pub attack: Vec<Packet>,
    pub legit: Vec<Packet>,
    /// The most of the legitimate packets a right rule may match.
    pub legit_allowed: f64,
    /// Whether a FlowSpec rule can describe the attack at all (when not,
    /// the right outcome is no rule).
    pub ruleable: bool,
}

impl Shaped {
    pub fn scenario(&self) -> Scenario {
        let mut packets: Vec<Packet> = self.attack.iter().chain(&self.legit).copied().collect();
        packets.sort_by_key(|p| p.time_us);
        Scenario {
            name: self.name.to_owned(),
            packets,
        }
    }
}

/// `seconds` of `pps` packets from `make`, starting `start_us` after T0.
fn stream(
    rng: &mut Rng,
    start_us: u64,
    seconds: u64,
    pps: u64,
    mut make: impl FnMut(&mut Rng, u64) -> PacketSpec,
) -> Vec<Packet> {
    let gap = 1_000_000 / pps.max(1);
    (0..seconds * pps)
        .map(|i| Packet {
            time_us: T0_US + start_us + i * gap + rng.range(0, gap.max(1)),
            spec: make(rng, i),
        })
        .collect()
}

fn source(rng: &mut Rng, v6: bool) -> IpAddr {
    if v6 {
        random_v6(rng)
    } else {
        random_v4(rng)
    }
}

/// Three hundred web clients of a host, each with its path's TTL.
struct WebClients(Vec<(IpAddr, u8)>);

impl WebClients {
    fn new(rng: &mut Rng, v6: bool) -> WebClients {
        WebClients((0..300).map(|_| (source(rng, v6), path_ttl(rng))).collect())
    }

    /// One client's packet to `target`: a SYN, an ACK or a request to 443.
    fn packet(&self, r: &mut Rng, target: IpAddr) -> PacketSpec {
        let (c, ttl) = self.0[r.range(0, self.0.len() as u64) as usize];
        let flags = *r.pick(&[0x02u8, 0x10, 0x18, 0x10]);
        PacketSpec {
            tcp_flags: flags,
            ttl,
            ip_len: if flags == 0x18 { 600 } else { 60 },
            ..PacketSpec::tcp(c, target, r.range(1024, 65_000) as u16, 443)
        }
    }
}

/// Web clients of `target`: SYNs, ACKs and requests to 443, `pps` of them.
fn web(rng: &mut Rng, target: IpAddr, seconds: u64, pps: u64) -> Vec<Packet> {
    let clients = WebClients::new(rng, target.is_ipv6());
    stream(rng, 0, seconds, pps, |r, _| clients.packet(r, target))
}

/// Reflectors of a service: real hosts with path TTLs.
fn reflectors(rng: &mut Rng, v6: bool, n: usize) -> Vec<(IpAddr, u8)> {
    (0..n).map(|_| (source(rng, v6), path_ttl(rng))).collect()
}

/// SYN-ACK reflection (answers to SYNs forged with the host's address)
/// beside the host's own inbound SYNs from its web clients: the rule must
/// match SYN+ACK, not "SYN without ACK".
pub fn syn_ack_beside_syns(target: IpAddr, start_us: u64, seconds: u64, seed: u64) -> Shaped {
    let mut rng = Rng::new(seed);
    let refl = reflectors(&mut rng, target.is_ipv6(), 300);
    let attack = stream(&mut rng, start_us, seconds, 20_000, |r, _| {
        let (s, ttl) = refl[r.range(0, refl.len() as u64) as usize];
        PacketSpec {
            tcp_flags: 0x12,
            ttl,
            ..PacketSpec::tcp(
                s,
                target,
                *r.pick(&[80, 443, 22]),
                r.range(1, 65_535) as u16,
            )
        }
    });
    let legit = web(&mut rng, target, start_us / 1_000_000 + seconds + 2, 800);
    Shaped {
        name: "syn-ack reflection beside legitimate SYNs",
        target,
        attack,
        legit,
        legit_allowed: 0.01,
        ruleable: true,
    }
}

/// Amplification from five services at a fifth each: one rule for the
/// heaviest would let four fifths through.
pub fn five_services(target: IpAddr, start_us: u64, seconds: u64, seed: u64) -> Shaped {
    let mut rng = Rng::new(seed);
    let refl = reflectors(&mut rng, target.is_ipv6(), 500);
    let services: [(u16, u16); 5] = [
        (19, 1000),
        (53, 1400),
        (123, 468),
        (1900, 320),
        (11211, 1400),
    ];
    let attack = stream(&mut rng, start_us, seconds, 20_000, |r, i| {
        let (s, ttl) = refl[r.range(0, refl.len() as u64) as usize];
        let (port, len) = services[(i % 5) as usize];
        PacketSpec {
            ttl,
            ..PacketSpec::udp(s, target, port, r.range(1024, 65_535) as u16, len)
        }
    });
    let legit = web(&mut rng, target, start_us / 1_000_000 + seconds + 2, 300);
    Shaped {
        name: "amplification from five services",
        target,
        attack,
        legit,
        legit_allowed: 0.01,
        ruleable: true,
    }
}

/// Five families at 19 % each (and a little else): a rule for the largest
/// lets four fifths through.
pub fn five_families(target: IpAddr, start_us: u64, seconds: u64, seed: u64) -> Shaped {
    let mut rng = Rng::new(seed);
    let v6 = target.is_ipv6();
    let attack = stream(&mut rng, start_us, seconds, 25_000, |r, i| {
        let s = source(r, v6);
        let base = |p: PacketSpec| PacketSpec { ttl: 57, ..p };
        match i % 5 {
            0 => base(PacketSpec {
                tcp_flags: 0x02,
                ..PacketSpec::tcp(s, target, r.range(1024, 65_535) as u16, 80)
            }),
            1 => base(PacketSpec::udp(
                s,
                target,
                r.range(1024, 65_535) as u16,
                r.range(1, 65_535) as u16,
                512,
            )),
            2 => base(PacketSpec::icmp(
                s,
                target,
                if v6 { 128 } else { 8 },
                0,
                1000,
            )),
            3 => base(PacketSpec {
                fragment: Some((r.range(1, 44) as u16 * 185, true)),
                ..PacketSpec::udp(s, target, 0, 0, 1500)
            }),
            _ => base(PacketSpec {
                protocol: 47,
                src_port: 0,
                dst_port: 0,
                tcp_flags: 0,
                ip_len: 512,
                ..PacketSpec::tcp(s, target, 0, 0)
            }),
        }
    });
    let legit = web(&mut rng, target, start_us / 1_000_000 + seconds + 2, 300);
    Shaped {
        name: "five families at a fifth each",
        target,
        attack,
        legit,
        legit_allowed: 0.05,
        ruleable: true,
    }
}

/// A UDP flood alternating 64- and 1400-byte packets to one port: a flow's
/// average (732) is no packet's length, and a rule on it matches nothing.
pub fn alternating_sizes(target: IpAddr, start_us: u64, seconds: u64, seed: u64) -> Shaped {
    let mut rng = Rng::new(seed);
    let v6 = target.is_ipv6();
    let attack = stream(&mut rng, start_us, seconds, 20_000, |r, i| PacketSpec {
        ttl: 57,
        ..PacketSpec::udp(
            source(r, v6),
            target,
            r.range(1024, 65_535) as u16,
            27_015,
            if i % 2 == 0 { 64 } else { 1400 },
        )
    });
    let legit = web(&mut rng, target, start_us / 1_000_000 + seconds + 2, 300);
    Shaped {
        name: "alternating packet sizes",
        target,
        attack,
        legit,
        legit_allowed: 0.01,
        ruleable: true,
    }
}

/// DNS amplification with answers too large for one packet: first
/// fragments carry the source port, later ones no L4 header at all.
pub fn fragmented_dns(target: IpAddr, start_us: u64, seconds: u64, seed: u64) -> Shaped {
    let mut rng = Rng::new(seed);
    let refl = reflectors(&mut rng, target.is_ipv6(), 400);
    let mut attack = Vec::new();
    for p in stream(&mut rng, start_us, seconds, 8_000, |r, _| {
        let (s, ttl) = refl[r.range(0, refl.len() as u64) as usize];
        PacketSpec {
            ttl,
            ident: r.next_u64() as u32,
            ..PacketSpec::udp(s, target, 53, r.range(1024, 65_535) as u16, 3_800)
        }
    }) {
        // 1500, 1500 and the rest: a first fragment and two later ones.
        let header = if p.spec.dst.is_ipv4() { 20 } else { 48 };
        let chunk = (1500 - header) / 8 * 8;
        let payload = p.spec.ip_len - if p.spec.dst.is_ipv4() { 20 } else { 40 };
        let mut off = 0u16;
        while off < payload {
            let n = chunk.min(payload - off);
            attack.push(Packet {
                time_us: p.time_us + u64::from(off / 8),
                spec: PacketSpec {
                    ip_len: header + n,
                    fragment: Some((off / 8, off + n < payload)),
                    ..p.spec
                },
            });
            off += n;
        }
    }
    // The host resolves names: small DNS answers come back to it.
    let resolvers = reflectors(&mut rng, target.is_ipv6(), 4);
    let mut legit = web(&mut rng, target, start_us / 1_000_000 + seconds + 2, 300);
    legit.extend(stream(
        &mut rng,
        0,
        start_us / 1_000_000 + seconds + 2,
        50,
        |r, _| {
            let (s, ttl) = resolvers[r.range(0, 4) as usize];
            PacketSpec {
                ttl,
                ..PacketSpec::udp(
                    s,
                    target,
                    53,
                    r.range(1024, 65_535) as u16,
                    r.range(80, 300) as u16,
                )
            }
        },
    ));
    Shaped {
        name: "fragmented DNS amplification",
        target,
        attack,
        legit,
        legit_allowed: 0.01,
        ruleable: true,
    }
}

/// An IPv6 UDP flood whose destination-options chain is longer than a
/// 128-byte sampled header: the upper layer is never seen, and no rule may
/// name an extension header as the protocol or port 0.
pub fn long_ipv6_chain(target: IpAddr, start_us: u64, seconds: u64, seed: u64) -> Shaped {
    assert!(target.is_ipv6());
    let mut rng = Rng::new(seed);
    let attack = stream(&mut rng, start_us, seconds, 20_000, |r, _| PacketSpec {
        ttl: 57,
        ext_headers: 12,
        ..PacketSpec::udp(
            random_v6(r),
            target,
            r.range(1024, 65_535) as u16,
            r.range(1, 65_535) as u16,
            512,
        )
    });
    let legit = web(&mut rng, target, start_us / 1_000_000 + seconds + 2, 300);
    Shaped {
        name: "IPv6 with a long extension-header chain",
        target,
        attack,
        legit,
        legit_allowed: 0.0,
        ruleable: false,
    }
}

/// A host's own traffic second by second — web clients, `base[s]`
/// packets in second `s` — with a UDP flood of `extra[s]` packets on top:
/// the shapes of an attacker who ramps a flood slowly under a baseline,
/// or pumps it with bursts just under its limit before the attack. The
/// schedule is the caller's (a pumping schedule follows the baseline it
/// pumps). Packets are evenly spread over each second.
pub fn paced(target: IpAddr, base: &[u64], extra: &[u64], seed: u64) -> Shaped {
    let mut rng = Rng::new(seed);
    let v6 = target.is_ipv6();
    let clients = WebClients::new(&mut rng, v6);
    // Each second's packets evenly spread over it: a stream of one second.
    let second = |s: usize| s as u64 * 1_000_000;
    let mut legit = Vec::new();
    let mut attack = Vec::new();
    for (s, &n) in base.iter().enumerate() {
        legit.extend(stream(&mut rng, second(s), 1, n, |r, _| {
            clients.packet(r, target)
        }));
    }
    for (s, &n) in extra.iter().enumerate() {
        attack.extend(stream(&mut rng, second(s), 1, n, |r, _| PacketSpec {
            ttl: 57,
            ..PacketSpec::udp(
                source(r, v6),
                target,
                r.range(1024, 65_535) as u16,
                r.range(1, 65_535) as u16,
                512,
            )
        }));
    }
    Shaped {
        name: "paced",
        target,
        attack,
        legit,
        legit_allowed: 0.0,
        ruleable: true,
    }
}
