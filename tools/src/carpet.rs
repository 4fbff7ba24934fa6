//! Traffic spread over a prefix (DET-6): carpet bombing — an attack on
//! every address of a /24 or a /64, each host under its own threshold —
//! a reflection flood that moves between sub-prefixes, and a benign
//! prefix-wide surge (a CDN filling every host's cache) that must not
//! trigger once levee has learnt it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use levee_collectors::encode::packet::PacketSpec;

use crate::attacks::{attack, path_ttl, random_v4, random_v6, Attack};
use crate::scenario::{Packet, Rng, Scenario, T0_US};

/// `n` addresses of the prefix `network/len`: for IPv4 the first `n`
/// host addresses (from .1), for IPv6 `n` random interface identifiers.
pub fn addresses(network: IpAddr, len: u8, n: u32, seed: u64) -> Vec<IpAddr> {
    let mut rng = Rng::new(seed);
    match network {
        IpAddr::V4(a) => {
            let base = u32::from(a) & (!0u32).checked_shl(32 - u32::from(len)).unwrap_or(0);
            let room = 1u64 << (32 - u32::from(len.min(32)));
            (1..=u64::from(n).min(room.saturating_sub(2)))
                .map(|i| IpAddr::V4(Ipv4Addr::from(base + i as u32)))
                .collect()
        }
        IpAddr::V6(a) => {
            let bits = 128 - u32::from(len.min(128));
            let mask = if bits >= 128 {
                u128::MAX
            } else {
                (1u128 << bits) - 1
            };
            let base = u128::from(a) & !mask;
            let mut out: Vec<IpAddr> = Vec::with_capacity(n as usize);
            while out.len() < n as usize {
                let low = (u128::from(rng.next_u64()) | 1) & mask;
                let ip = IpAddr::V6(Ipv6Addr::from(base | low));
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
            out
        }
    }
}

/// `a` (its family, sources, rate in all, start and length) spread over
/// `targets`: each packet to one of them at random.
pub fn spread(a: &Attack, targets: &[IpAddr], seed: u64) -> Scenario {
    moving(a, &[targets.to_vec()], u64::MAX, seed)
}

/// `a` spread over one group of targets at a time, moving to the next
/// group every `every_s` seconds (a reflection flood that walks the
/// sub-prefixes of a customer's range).
pub fn moving(a: &Attack, groups: &[Vec<IpAddr>], every_s: u64, seed: u64) -> Scenario {
    let mut s = attack(a, seed);
    let mut rng = Rng::new(seed ^ 0x5eed);
    let every_us = every_s.saturating_mul(1_000_000);
    for p in &mut s.packets {
        let since = p.time_us.saturating_sub(T0_US + a.start_us);
        let g = &groups[((since / every_us.max(1)) as usize) % groups.len()];
        p.spec.dst = *rng.pick(g);
    }
    s.name = format!("carpet-{}", s.name);
    s
}

/// A benign surge to every host of a prefix: a CDN filling caches — a few
/// servers sending full TCP segments from port 443 (established sessions:
/// ACK and PSH+ACK), `pps` in all over `targets`, from `start_us` for
/// `seconds`.
pub fn surge(targets: &[IpAddr], pps: u64, start_us: u64, seconds: u64, seed: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let v6 = targets.first().is_some_and(IpAddr::is_ipv6);
    let servers: Vec<(IpAddr, u8)> = (0..8)
        .map(|_| {
            let a = if v6 {
                random_v6(&mut rng)
            } else {
                random_v4(&mut rng)
            };
            (a, path_ttl(&mut rng))
        })
        .collect();
    let gap = 1_000_000 / pps.max(1);
    let mut packets = Vec::with_capacity((pps * seconds) as usize);
    for i in 0..pps * seconds {
        let (src, ttl) = *rng.pick(&servers);
        let dst = *rng.pick(targets);
        let flags = if rng.range(0, 4) == 0 { 0x10 } else { 0x18 };
        packets.push(Packet {
            time_us: T0_US + start_us + i * gap + rng.range(0, gap.max(1)),
            spec: PacketSpec {
                tcp_flags: flags,
                ttl,
                ip_len: 1500,
                ..PacketSpec::tcp(src, dst, 443, rng.range(32_768, 61_000) as u16)
            },
        });
    }
    packets.sort_by_key(|p| p.time_us);
    Scenario {
        name: "surge".into(),
        packets,
    }
}

/// Ordinary web traffic to every host of a prefix: `pps` in all, from
/// many clients, for `seconds` from the start.
pub fn web(targets: &[IpAddr], pps: u64, seconds: u64, seed: u64) -> Scenario {
    web_varying(targets, pps, 0.0, seconds, seed)
}

/// [`web`] whose rate varies from second to second, uniformly within
/// `pps` ± `swing` × `pps` (a busy prefix is never flat).
pub fn web_varying(targets: &[IpAddr], pps: u64, swing: f64, seconds: u64, seed: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let v6 = targets.first().is_some_and(IpAddr::is_ipv6);
    let clients: Vec<(IpAddr, u8)> = (0..2000)
        .map(|_| {
            let a = if v6 {
                random_v6(&mut rng)
            } else {
                random_v4(&mut rng)
            };
            (a, path_ttl(&mut rng))
        })
        .collect();
    let mut packets = Vec::with_capacity((pps * seconds) as usize);
    let mut times = Vec::new();
    for s in 0..seconds {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let n = (pps as f64 * (1.0 + swing * (2.0 * u - 1.0)))
            .round()
            .max(0.0) as u64;
        let gap = 1_000_000 / n.max(1);
        times.extend((0..n).map(|i| T0_US + s * 1_000_000 + i * gap + rng.range(0, gap.max(1))));
    }
    for time_us in times {
        let (src, ttl) = *rng.pick(&clients);
        let flags = *rng.pick(&[0x02u8, 0x10, 0x18, 0x10, 0x11]);
        packets.push(Packet {
            time_us,
            spec: PacketSpec {
                tcp_flags: flags,
                ttl,
                ip_len: if flags == 0x18 { 600 } else { 52 },
                ..PacketSpec::tcp(
                    src,
                    *rng.pick(targets),
                    rng.range(1024, 65_000) as u16,
                    *rng.pick(&[80u16, 443]),
                )
            },
        });
    }
    packets.sort_by_key(|p| p.time_us);
    Scenario {
        name: "web".into(),
        packets,
    }
}
