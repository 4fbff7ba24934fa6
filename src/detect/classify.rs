//! Classification (CLS-1, CLS-2): which of the seven families an attack's
//! traffic is, how sure levee is, and the spoofing and botnet flags.
//!
//! Everything is computed from an incident's accumulated [`Details`]
//! (packets weighted by their estimated count):
//!
//! - Each family's **share** is the fraction of the host's inbound packets
//!   that carry its signature: `syn_flood` SYN-without-ACK (plus SYN-ACK,
//!   reflected), `tcp_flood` other TCP, `amplification` UDP from a known
//!   reflector port, `udp_flood` other UDP, `icmp_flood` ICMP/ICMPv6,
//!   `fragment_flood` non-first fragments, `protocol_flood` other IP
//!   protocols.
//! - Families with a share of at least [`SIGNIFICANT`] are the attack's
//!   components; two or more make it `multi_vector`.
//! - **Confidence** = (share of the named family, or the components' total
//!   for `multi_vector`) × evidence, where evidence = min(1, records / 100):
//!   a verdict from a handful of samples is worth less.
//! - **Spoofed**: at least 200 records, nearly every one from a new source
//!   (distinct sources ≥ 0.8 × records), and a TTL pattern no crowd of real
//!   hosts shows — one origin (TTL entropy ≤ 2 bits) or random TTLs (≥ 6
//!   bits). Without TTLs (flow export): distinct ≥ 0.9 × records over at
//!   least 2000 records.
//! - **Botnet**: not spoofed, and at least `botnet_sources` distinct sources.

use serde::Serialize;

use crate::account::{class, tcpkind, Details};

/// The least share that makes a family a component of the attack.
pub const SIGNIFICANT: f64 = 0.2;

/// Well-known UDP reflector source ports and the service they name.
pub const REFLECTORS: &[(u16, &str)] = &[
    (17, "qotd"),
    (19, "chargen"),
    (53, "dns"),
    (69, "tftp"),
    (111, "portmap"),
    (123, "ntp"),
    (137, "netbios"),
    (161, "snmp"),
    (389, "cldap"),
    (427, "slp"),
    (520, "rip"),
    (1434, "mssql"),
    (1900, "ssdp"),
    (3283, "ard"),
    (3702, "wsd"),
    (5353, "mdns"),
    (5683, "coap"),
    (10001, "ubiquiti"),
    (11211, "memcached"),
    (27015, "steam"),
    (32414, "plex"),
    (37810, "dvr"),
];

pub fn reflector(port: u16) -> Option<&'static str> {
    REFLECTORS.iter().find(|(p, _)| *p == port).map(|(_, n)| *n)
}

/// The seven families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    SynFlood,
    TcpFlood,
    UdpFlood,
    IcmpFlood,
    Amplification,
    FragmentFlood,
    ProtocolFlood,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::SynFlood => "syn_flood",
            Family::TcpFlood => "tcp_flood",
            Family::UdpFlood => "udp_flood",
            Family::IcmpFlood => "icmp_flood",
            Family::Amplification => "amplification",
            Family::FragmentFlood => "fragment_flood",
            Family::ProtocolFlood => "protocol_flood",
        }
    }
}

/// One family's part of an attack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    pub family: Family,
    pub vector: Option<String>,
    pub share: f64,
}

/// A classification verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// A family name, or `multi_vector`.
    pub family: String,
    pub vector: Option<String>,
    pub confidence: f64,
    /// The significant families, largest first (one for a single family).
    pub components: Vec<Component>,
    pub sources_estimate: u64,
    pub spoofed: bool,
    pub botnet: bool,
    /// TTL entropy in bits (None without TTLs).
    pub ttl_entropy: Option<f64>,
}

fn protocol_name(p: u8) -> String {
    match p {
        4 => "ipip".into(),
        41 => "ipv6-in-ipv4".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        51 => "ah".into(),
        103 => "pim".into(),
        112 => "vrrp".into(),
        132 => "sctp".into(),
        n => format!("proto-{n}"),
    }
}

/// Shannon entropy, in bits, of a histogram.
pub fn entropy(hist: &[u64]) -> f64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0.0;
    }
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.log2()
        })
        .sum()
}

pub fn classify(d: &Details, botnet_sources: u64) -> Verdict {
    let total = d.classes[class::ALL].max(1) as f64;
    let share = |n: u64| n as f64 / total;

    let syn_ack = d.tcp[tcpkind::SYN_ACK];
    let tcp_other = d.classes[class::TCP].saturating_sub(d.classes[class::TCP_SYN]);
    // Amplification: UDP from reflector ports; the heaviest names the vector.
    let mut amp = 0u64;
    let mut amp_vector: Option<(&str, u64)> = None;
    for (port, n) in d.udp_src_ports.top() {
        if let Some(name) = reflector(port) {
            amp += n;
            if amp_vector.is_none_or(|(_, m)| n > m) {
                amp_vector = Some((name, n));
            }
        }
    }
    let amp = amp.min(d.classes[class::UDP]);

    let syn_vector = (syn_ack > d.classes[class::TCP_SYN]).then(|| "syn_ack".to_owned());
    let tcp_vector = {
        let other: Vec<(usize, u64)> = d
            .tcp
            .iter()
            .copied()
            .enumerate()
            .filter(|&(k, _)| k != tcpkind::SYN && k != tcpkind::SYN_ACK)
            .collect();
        other
            .iter()
            .max_by_key(|(_, n)| *n)
            .filter(|(_, n)| *n > 0)
            .map(|(k, _)| tcpkind::NAMES[*k].to_owned())
    };
    let proto_vector = d.protocols.top().first().map(|(p, _)| protocol_name(*p));

    let mut parts = [
        Component {
            family: Family::SynFlood,
            vector: syn_vector,
            share: share(d.classes[class::TCP_SYN] + syn_ack.min(tcp_other)),
        },
        Component {
            family: Family::TcpFlood,
            vector: tcp_vector,
            share: share(tcp_other.saturating_sub(syn_ack)),
        },
        Component {
            family: Family::Amplification,
            vector: amp_vector.map(|(n, _)| n.to_owned()),
            share: share(amp),
        },
        Component {
            family: Family::UdpFlood,
            vector: None,
            share: share(d.classes[class::UDP] - amp),
        },
        Component {
            family: Family::IcmpFlood,
            vector: None,
            share: share(d.classes[class::ICMP]),
        },
        Component {
            family: Family::FragmentFlood,
            vector: None,
            share: share(d.classes[class::FRAGMENT]),
        },
        Component {
            family: Family::ProtocolFlood,
            vector: proto_vector,
            share: share(d.classes[class::OTHER]),
        },
    ];
    parts.sort_by(|a, b| b.share.total_cmp(&a.share));
    let significant: Vec<Component> = parts
        .iter()
        .filter(|c| c.share >= SIGNIFICANT)
        .cloned()
        .collect();
    let evidence = (d.records as f64 / 100.0).min(1.0);

    let (family, vector, confidence, components) = if significant.len() >= 2 {
        let sum: f64 = significant.iter().map(|c| c.share).sum();
        (
            "multi_vector".to_owned(),
            None,
            sum.min(1.0) * evidence,
            significant,
        )
    } else {
        let top = parts[0].clone();
        (
            top.family.as_str().to_owned(),
            top.vector.clone(),
            top.share * evidence,
            vec![top],
        )
    };

    let sources = d.sources.estimate();
    let records = d.records as f64;
    let ttl_entropy = (d.ttl_known > 0).then(|| entropy(&d.ttl[..]));
    let spoofed = match ttl_entropy {
        Some(h) => d.records >= 200 && sources >= 0.8 * records && !(2.0..6.0).contains(&h),
        None => d.records >= 2000 && sources >= 0.9 * records,
    };
    let botnet = !spoofed && sources >= botnet_sources as f64;
    Verdict {
        family,
        vector,
        confidence: (confidence * 1000.0).round() / 1000.0,
        components,
        sources_estimate: sources.round() as u64,
        spoofed,
        botnet,
        ttl_entropy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::sketch::hash_addr;
    use levee_collectors::Addr;

    fn details(f: impl Fn(&mut Details)) -> Details {
        let mut d = Details::default();
        f(&mut d);
        d
    }

    #[test]
    fn a_syn_flood_is_a_syn_flood() {
        let d = details(|d| {
            d.records = 1000;
            d.classes[class::ALL] = 1000;
            d.classes[class::TCP] = 990;
            d.classes[class::TCP_SYN] = 980;
            d.tcp[tcpkind::SYN] = 980;
            d.tcp[tcpkind::ACK] = 10;
            d.classes[class::UDP] = 10;
        });
        let v = classify(&d, 300);
        assert_eq!(v.family, "syn_flood");
        assert!(v.confidence >= 0.97, "{}", v.confidence);
    }

    #[test]
    fn amplification_names_its_service() {
        let d = details(|d| {
            d.records = 500;
            d.classes[class::ALL] = 1000;
            d.classes[class::UDP] = 1000;
            d.udp_src_ports.add(123, 950);
            d.udp_src_ports.add(40_000, 50);
        });
        let v = classify(&d, 300);
        assert_eq!(
            (v.family.as_str(), v.vector.as_deref()),
            ("amplification", Some("ntp"))
        );
        assert!((v.confidence - 0.95).abs() < 1e-9);
    }

    #[test]
    fn two_significant_families_are_multi_vector() {
        let d = details(|d| {
            d.records = 1000;
            d.classes[class::ALL] = 1000;
            d.classes[class::TCP] = 500;
            d.classes[class::TCP_SYN] = 500;
            d.classes[class::ICMP] = 450;
            d.classes[class::UDP] = 50;
        });
        let v = classify(&d, 300);
        assert_eq!(v.family, "multi_vector");
        let fams: Vec<Family> = v.components.iter().map(|c| c.family).collect();
        assert_eq!(fams, [Family::SynFlood, Family::IcmpFlood]);
        assert!((v.confidence - 0.95).abs() < 1e-9);
    }

    #[test]
    fn little_evidence_lowers_confidence() {
        let d = details(|d| {
            d.records = 20;
            d.classes[class::ALL] = 20_000;
            d.classes[class::ICMP] = 20_000;
        });
        assert!((classify(&d, 300).confidence - 0.2).abs() < 1e-9);
    }

    #[test]
    fn spoofing_and_botnets() {
        // Spoofed: every packet a new source, all with one TTL (one origin).
        let spoofed = details(|d| {
            d.records = 1000;
            d.classes[class::ALL] = 1000;
            d.classes[class::UDP] = 1000;
            for i in 0..1000u32 {
                d.sources
                    .insert_hash(hash_addr(&Addr::v4((i * 7919 + 13).to_be_bytes())));
            }
            d.ttl[57] = 1000;
            d.ttl_known = 1000;
        });
        let v = classify(&spoofed, 300);
        assert!(v.spoofed && !v.botnet, "{v:?}");
        // A botnet: 1000 real sources sending many packets each, TTLs of real paths.
        let botnet = details(|d| {
            d.records = 20_000;
            d.classes[class::ALL] = 20_000;
            d.classes[class::UDP] = 20_000;
            for i in 0..1000u32 {
                d.sources
                    .insert_hash(hash_addr(&Addr::v4((0x0a00_0000 + i).to_be_bytes())));
                d.ttl[(40 + i % 25) as usize] += 10;
                d.ttl[(100 + i % 20) as usize] += 10;
            }
            d.ttl_known = 20_000;
        });
        let v = classify(&botnet, 300);
        assert!(!v.spoofed && v.botnet, "{v:?}");
        assert!((v.sources_estimate as f64 - 1000.0).abs() < 100.0);
    }
}
