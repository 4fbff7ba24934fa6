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
//!   protocols. Each share carries its uncertainty: a 95 % Wilson score
//!   interval over the records sampled into the details ([`Details::sampled`]:
//!   sFlow samples, captured packets, flow records — not the packets they
//!   stand for).
//! - **Evidence first.** Under [`MIN_SAMPLES`] sampled records, or when no
//!   family is clearly present, the verdict is `unclassified`, with the
//!   reason: shares of zero name nothing, and a family is never guessed
//!   from a handful of samples.
//! - Families present (share ≥ [`PRESENT`], its interval clear of zero) are
//!   the attack's parts; those that may be [`SIGNIFICANT`] or more (the
//!   interval reaches it, the share is at least half of it) are its
//!   components. One component names the family — it is then significantly
//!   ahead of every other; two or more make it `multi_vector`; several parts
//!   none of which may be significant are `multi_vector` too.
//! - **Confidence** is the lower bound of the named share's interval (the
//!   components' total for `multi_vector`): 20 samples that all agree give
//!   0.84, never 1.0.
//! - **Spoofed**, from at least 200 records with TTLs: one origin forging
//!   many sources (TTL entropy ≤ 2 bits behind ≥ 50 distinct sources, and,
//!   where sampling lets sources repeat, nearly every record a new one), or
//!   random TTLs (≥ 30 % of them values no real path gives: 0–23, 65–87,
//!   129–214). Without TTLs, only unsampled one-packet flows from ever-new
//!   sources. Sampling is allowed for: at 1:1000 a record rarely repeats a
//!   source whoever sends, so that test alone says nothing.
//! - **Botnet**: not spoofed, and at least `botnet_sources` distinct sources
//!   seen — a lower bound of the real count, sound under sampling.
//! - `flags_why` says what the flags rest on.

use serde::Serialize;

use crate::accounting::{class, tcpkind, Details};

/// The least share that makes a family a component of the attack.
pub const SIGNIFICANT: f64 = 0.2;
/// The least share that makes a family a part of the attack at all.
pub const PRESENT: f64 = 0.05;
/// Sampled records below which nothing is named.
pub const MIN_SAMPLES: u64 = 10;
/// z of the 95 % two-sided interval.
const Z: f64 = 1.96;

/// The Wilson score interval of a share `p` observed over `n` samples.
pub fn wilson(p: f64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let p = p.clamp(0.0, 1.0);
    let z2 = Z * Z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

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
    /// The 95 % interval of the share.
    pub low: f64,
    pub high: f64,
    /// Amplification: every reflector service present, heaviest first,
    /// with its source port and share of the attack's packets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
}

/// A reflected service of an amplification attack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    pub share: f64,
}

/// What `family` says when the evidence names nothing.
pub const UNCLASSIFIED: &str = "unclassified";

/// A classification verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// A family name, `multi_vector`, or `unclassified`.
    pub family: String,
    pub vector: Option<String>,
    /// The lower bound of the named share's interval; 0 when unclassified.
    pub confidence: f64,
    /// The significant families, largest first (one for a single family);
    /// empty when unclassified.
    pub components: Vec<Component>,
    /// Every family present, largest first: what rules are built from.
    pub parts: Vec<Component>,
    /// Records sampled into the details: the evidence behind the shares.
    pub samples: u64,
    /// Why nothing is named, when `family` is `unclassified`.
    pub why: Option<String>,
    pub sources_estimate: u64,
    pub spoofed: bool,
    pub botnet: bool,
    /// TTL entropy in bits (None without TTLs).
    pub ttl_entropy: Option<f64>,
    /// What the spoofing and botnet flags rest on, and how sure they are.
    pub flags_why: String,
}

impl Verdict {
    /// Whether a family (or `multi_vector`) is named.
    pub fn classified(&self) -> bool {
        self.family != UNCLASSIFIED
    }

    /// The verdict before any evidence.
    pub fn none() -> Verdict {
        Verdict {
            family: UNCLASSIFIED.to_owned(),
            vector: None,
            confidence: 0.0,
            components: Vec::new(),
            parts: Vec::new(),
            samples: 0,
            why: Some("no samples of the attack yet".to_owned()),
            sources_estimate: 0,
            spoofed: false,
            botnet: false,
            ttl_entropy: None,
            flags_why: String::new(),
        }
    }
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

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A lower bound to three places, rounded down: never up to a certainty
/// the evidence does not give.
fn floor3(x: f64) -> f64 {
    (x * 1000.0).floor() / 1000.0
}

pub fn classify(d: &Details, botnet_sources: u64) -> Verdict {
    let total = d.classes[class::ALL].max(1) as f64;
    let share = |n: u64| n as f64 / total;
    let n = d.sampled;

    let syn_ack = d.tcp[tcpkind::SYN_ACK];
    let tcp_other = d.classes[class::TCP].saturating_sub(d.classes[class::TCP_SYN]);
    // Amplification: UDP from reflector ports, each service on its own.
    let mut services: Vec<(&'static str, u16, u64)> = d
        .udp_src_ports
        .top()
        .into_iter()
        .filter_map(|(port, n)| reflector(port).map(|name| (name, port, n)))
        .collect();
    services.sort_by_key(|s| std::cmp::Reverse(s.2));
    let amp = services
        .iter()
        .map(|s| s.2)
        .sum::<u64>()
        .min(d.classes[class::UDP]);
    let amp_vector = services.first().map(|s| s.0.to_owned());

    let syn_vector = (syn_ack > d.classes[class::TCP_SYN]).then(|| "syn_ack".to_owned());
    let tcp_vector = (0..tcpkind::COUNT)
        .filter(|&k| k != tcpkind::SYN && k != tcpkind::SYN_ACK)
        .map(|k| (k, d.tcp[k]))
        .filter(|&(_, n)| n > 0)
        .max_by_key(|&(_, n)| n)
        .map(|(k, _)| tcpkind::NAMES[k].to_owned());
    let proto_vector = d.protocols.top().first().map(|(p, _)| protocol_name(*p));

    let part = |family: Family, vector: Option<String>, count: u64| {
        let sh = share(count);
        let (low, high) = wilson(sh, n);
        Component {
            family,
            vector,
            share: sh,
            low,
            high,
            services: Vec::new(),
        }
    };
    let mut amplification = part(Family::Amplification, amp_vector, amp);
    amplification.services = services
        .iter()
        .filter(|s| share(s.2) >= PRESENT / 2.0)
        .map(|&(name, port, c)| Service {
            name,
            port,
            share: round3(share(c)),
        })
        .collect();
    let mut parts = vec![
        part(
            Family::SynFlood,
            syn_vector,
            d.classes[class::TCP_SYN] + syn_ack.min(tcp_other),
        ),
        part(
            Family::TcpFlood,
            tcp_vector,
            tcp_other.saturating_sub(syn_ack),
        ),
        amplification,
        part(Family::UdpFlood, None, d.classes[class::UDP] - amp),
        part(Family::IcmpFlood, None, d.classes[class::ICMP]),
        part(Family::FragmentFlood, None, d.classes[class::FRAGMENT]),
        part(Family::ProtocolFlood, proto_vector, d.classes[class::OTHER]),
    ];
    parts.sort_by(|a, b| b.share.total_cmp(&a.share));
    // Present: a real part of the traffic, not a stray sample.
    parts.retain(|c| c.share >= PRESENT && c.low > PRESENT / 5.0);
    // A family is a component when it may be a fifth of the attack or
    // more: its interval reaches SIGNIFICANT and it is at least half that.
    // One component is named alone only when no other could be one too
    // ("significantly ahead"): five families at a fifth each, whichever
    // happens to be sampled at 20.5 %, are multi_vector, not one of them.
    let significant: Vec<Component> = parts
        .iter()
        .filter(|c| c.high >= SIGNIFICANT && c.share >= SIGNIFICANT / 2.0)
        .cloned()
        .collect();
    let sum_share = |cs: &[Component]| cs.iter().map(|c| c.share).sum::<f64>().min(1.0);

    let unclassified = |why: String| (UNCLASSIFIED.to_owned(), None, 0.0, Vec::new(), Some(why));
    let (family, vector, confidence, components, why) = if n < MIN_SAMPLES {
        unclassified(format!(
            "{n} sampled records; at least {MIN_SAMPLES} are needed to name a family"
        ))
    } else if significant.len() >= 2 {
        let low = wilson(sum_share(&significant), n).0;
        ("multi_vector".to_owned(), None, low, significant, None)
    } else if let [one] = significant.as_slice() {
        (
            one.family.as_str().to_owned(),
            one.vector.clone(),
            one.low,
            significant.clone(),
            None,
        )
    } else if parts.len() >= 2 {
        let low = wilson(sum_share(&parts), n).0;
        ("multi_vector".to_owned(), None, low, parts.clone(), None)
    } else {
        unclassified(format!(
            "no family stands out in {n} sampled records (the largest share is {:.0}%)",
            parts.first().map_or(0.0, |c| c.share * 100.0)
        ))
    };
    let round = |mut c: Component| {
        c.share = round3(c.share);
        c.low = floor3(c.low);
        c.high = round3(c.high);
        c
    };

    let sources = d.sources.estimate();
    let records = d.records as f64;
    let ttl_entropy = (d.ttl_known > 0).then(|| entropy(&d.ttl[..]));
    let (spoofed, flags_why) = flags(d, sources, ttl_entropy, botnet_sources);
    let botnet = !spoofed && sources >= botnet_sources as f64;
    let _ = records;
    Verdict {
        family,
        vector,
        confidence: floor3(confidence),
        components: components.into_iter().map(round).collect(),
        parts: parts.into_iter().map(round).collect(),
        samples: n,
        why,
        sources_estimate: sources.round() as u64,
        spoofed,
        botnet,
        ttl_entropy,
        flags_why,
    }
}

/// TTLs no real host's packets arrive with: initial TTLs are 32, 64, 128 or
/// 255 and paths are under 40 hops, so 0–23, 65–87 and 129–214 stay empty
/// for any crowd of real senders — and fill for forged random TTLs.
fn implausible_ttl(t: usize) -> bool {
    matches!(t, 0..=23 | 65..=87 | 129..=214)
}

/// The spoofing flag, and what both flags rest on. Sampling is allowed
/// for: a record standing for many packets (1:1000 sFlow, flow export)
/// rarely repeats a source whoever sends, so "nearly every record a new
/// source" says nothing there; a botnet flag counts distinct sources among
/// the records seen, a lower bound of the real count, so it stays sound.
fn flags(
    d: &Details,
    sources: f64,
    ttl_entropy: Option<f64>,
    botnet_sources: u64,
) -> (bool, String) {
    let records = d.records as f64;
    // Packets a record stands for: 1 unsampled, the rate under sFlow.
    let per_record = d.packets as f64 / records.max(1.0);
    let fresh = sources >= 0.8 * records;
    let botnet = |spoofed: bool| {
        if !spoofed && sources >= botnet_sources as f64 {
            format!(
                "; botnet: at least {sources:.0} distinct sources seen (botnet_sources {botnet_sources})"
            )
        } else {
            String::new()
        }
    };
    match ttl_entropy {
        Some(h) if d.records >= 200 => {
            let ttl_total = d.ttl_known.max(1) as f64;
            let odd: u64 = (0..256)
                .filter(|&t| implausible_ttl(t))
                .map(|t| d.ttl[t])
                .sum();
            let odd_share = odd as f64 / ttl_total;
            // One origin forging many sources: one path length, and (where
            // sources can repeat at all) nearly every record a new source.
            let one_origin = h <= 2.0 && (fresh || per_record > 4.0) && sources >= 50.0;
            // Random TTLs: the values no real path gives.
            let random = odd_share >= 0.3;
            let spoofed = one_origin || random;
            let why = if one_origin {
                format!(
                    "spoofed: {sources:.0} distinct sources behind one path length (TTL entropy {h:.1} bits over {} records)",
                    d.records
                )
            } else if random {
                format!(
                    "spoofed: {:.0}% of the TTLs are values no real path gives (random, forged)",
                    odd_share * 100.0
                )
            } else {
                format!("not spoofed: TTLs of real paths (entropy {h:.1} bits)")
            };
            (spoofed, why.clone() + &botnet(spoofed))
        }
        Some(_) => (
            false,
            format!("spoofing not judged: {} records, 200 needed", d.records) + &botnet(false),
        ),
        // Without TTLs (flow export), only unsampled flows of one packet
        // from ever-new sources say "forged".
        None if d.records >= 2000 && per_record <= 2.0 && sources >= 0.9 * records => (
            true,
            format!(
                "spoofed: {sources:.0} distinct sources over {} one-packet flows",
                d.records
            ),
        ),
        None => (
            false,
            "spoofing not judged: no TTLs, and sampled records rarely repeat a source".to_owned()
                + &botnet(false),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::sketch::hash_addr;
    use levee_collectors::Addr;

    fn details(f: impl Fn(&mut Details)) -> Details {
        let mut d = Details::default();
        f(&mut d);
        if d.sampled == 0 {
            d.sampled = d.records;
        }
        d
    }

    #[test]
    fn no_evidence_names_nothing() {
        // The bug this guards: empty details gave every family a share of
        // 0, and the first in the list (syn_flood) was named.
        let v = classify(&Details::default(), 300);
        assert_eq!(v.family, UNCLASSIFIED);
        assert_eq!(v.confidence, 0.0);
        assert!(v.components.is_empty());
        assert!(
            v.why.as_deref().unwrap().contains("0 sampled records"),
            "{v:?}"
        );
        // A few samples that agree are still not enough.
        let few = details(|d| {
            d.records = 5;
            d.classes[class::ALL] = 500;
            d.classes[class::UDP] = 500;
            d.udp_src_ports.add(123, 500);
        });
        let v = classify(&few, 300);
        assert_eq!(v.family, UNCLASSIFIED, "{v:?}");
        assert!(!v.classified());
    }

    #[test]
    fn confidence_grows_with_the_samples_and_never_reaches_one() {
        let pure = |n: u64| {
            classify(
                &details(|d| {
                    d.records = n;
                    d.classes[class::ALL] = n * 100;
                    d.classes[class::ICMP] = n * 100;
                }),
                300,
            )
        };
        let (c20, c100, c10k) = (
            pure(20).confidence,
            pure(100).confidence,
            pure(10_000).confidence,
        );
        assert_eq!(pure(20).family, "icmp_flood");
        assert!((c20 - 0.839).abs() < 0.002, "{c20}");
        assert!(
            c20 < c100 && c100 < c10k && c10k < 1.0,
            "{c20} {c100} {c10k}"
        );
    }

    #[test]
    fn five_families_at_a_fifth_each_are_all_named() {
        let d = details(|d| {
            d.records = 2000;
            d.classes[class::ALL] = 1000;
            d.classes[class::TCP] = 190;
            d.classes[class::TCP_SYN] = 190;
            d.tcp[tcpkind::SYN] = 190;
            d.classes[class::UDP] = 380;
            d.udp_src_ports.add(123, 190);
            d.udp_src_ports.add(40_000, 190);
            d.classes[class::ICMP] = 190;
            d.classes[class::FRAGMENT] = 190;
            d.classes[class::OTHER] = 50;
            d.protocols.add(47, 50);
        });
        let v = classify(&d, 300);
        assert_eq!(v.family, "multi_vector", "{v:?}");
        assert_eq!(v.components.len(), 5, "the five that may be a fifth: {v:?}");
        assert_eq!(v.parts.len(), 6, "and the GRE beside them: {v:?}");
        let covered: f64 = v.parts.iter().map(|c| c.share).sum();
        assert!(covered > 0.99, "{covered}");
        assert!(v.confidence > 0.9, "{}", v.confidence);
    }

    #[test]
    fn amplification_lists_every_service() {
        let d = details(|d| {
            d.records = 1000;
            d.classes[class::ALL] = 1000;
            d.classes[class::UDP] = 1000;
            for port in [19, 53, 123, 1900, 11211] {
                d.udp_src_ports.add(port, 200);
            }
        });
        let v = classify(&d, 300);
        assert_eq!(v.family, "amplification");
        let ports: Vec<u16> = v.components[0].services.iter().map(|s| s.port).collect();
        assert_eq!(ports.len(), 5, "{v:?}");
        for p in [19, 53, 123, 1900, 11211] {
            assert!(ports.contains(&p), "{ports:?}");
        }
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
        assert!(v.confidence >= 0.96, "{}", v.confidence);
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
        assert!((v.confidence - 0.93).abs() < 0.01, "{}", v.confidence);
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
        assert!((v.confidence - 0.935).abs() < 0.01, "{}", v.confidence);
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

    #[test]
    fn a_sampled_global_botnet_is_a_botnet_not_spoofed() {
        // sFlow at 1:1000: 400 samples, each from another of a global
        // botnet's hosts, TTLs of real paths of every length (more than 6
        // bits of entropy: what used to say "random, forged").
        let d = details(|d| {
            d.records = 400;
            d.packets = 400_000;
            d.classes[class::ALL] = 400_000;
            d.classes[class::UDP] = 400_000;
            for i in 0..400u32 {
                d.sources
                    .insert_hash(hash_addr(&Addr::v4((0x0b00_0000 + i * 977).to_be_bytes())));
                let ttl = if i % 3 == 0 { 88 + i % 41 } else { 24 + i % 41 };
                d.ttl[ttl as usize] += 1000;
            }
            d.ttl_known = 400_000;
        });
        let v = classify(&d, 300);
        assert!(v.ttl_entropy.unwrap() > 6.0, "{v:?}");
        assert!(!v.spoofed && v.botnet, "{}", v.flags_why);
        assert!(v.flags_why.contains("botnet"), "{}", v.flags_why);
        // Forged sources with random TTLs, sampled the same way.
        let forged = details(|d| {
            d.records = 400;
            d.packets = 400_000;
            d.classes[class::ALL] = 400_000;
            d.classes[class::UDP] = 400_000;
            for i in 0..400u32 {
                d.sources
                    .insert_hash(hash_addr(&Addr::v4((0x0c00_0000 + i * 31).to_be_bytes())));
                d.ttl[(i * 97 % 256) as usize] += 1000;
            }
            d.ttl_known = 400_000;
        });
        let v = classify(&forged, 300);
        assert!(v.spoofed && !v.botnet, "{}", v.flags_why);
    }
}
