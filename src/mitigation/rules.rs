//! Routes from classifications (MIT-2…4): what each level would announce
//! for an incident.
//!
//! FlowSpec rules match the attack as narrowly as the classification
//! allows — the host, the family's protocol, its ports and flags, a packet
//! length range when the attack's packets are alike, the source when there
//! is only one — so that they drop as little legitimate traffic as
//! possible. A multi-vector attack gets a rule per component. RTBH is the
//! host route with the blackhole community; scrubbing the covering
//! more-specific with the scrubbing communities.

use std::net::IpAddr;

use ipnet::IpNet;
use levee_bgp::{BlackholeRoute, Community, Diversion, FlowSpecRule, Fragment, Range, TcpFlags};

use crate::config::{Config, HostgroupMitigation};
use crate::detect::classify::{Family, REFLECTORS};
use crate::detect::Incident;

/// Packet lengths narrower than this spread make a FlowSpec component.
const LENGTH_SPREAD: u32 = 100;
/// Reflected packets at least this long (IP bytes) are amplified: an
/// amplification rule then matches only packets this long or longer, less
/// a margin (never below half of it).
const AMPLIFIED: u32 = 400;
/// Bytes added on either side of the sampled packet lengths (at least; 5 %
/// of the length when that is more).
const LENGTH_MARGIN: u32 = 16;
/// At most this many destination ports are matched; more match all.
const MAX_PORTS: usize = 4;
/// Values (ports, ICMP types, length ranges) one component of any rule
/// levee draws lists at most — automatic, merged or manual: routers take
/// long component lists badly (each value is a term every router
/// evaluates), and a longer list is a sign the rule is not one attack.
/// What a capped list leaves out is left to the coverage loop (another
/// rule, or the next level).
pub const MAX_VALUES: usize = 8;

/// The host route of an address (/32, /128).
pub fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// The FlowSpec rules for an incident: one per component of the attack as
/// its last seconds show it ([`Incident::current`]: rules follow an attack
/// that changes vector). Empty when nothing narrower than "all traffic to
/// the host" describes it, or when the attack is not classified.
pub fn flowspec(inc: &Incident, policy: &HostgroupMitigation) -> Vec<FlowSpecRule> {
    let host = inc.host.ip();
    let action = policy.flowspec_action;
    // The host, or all of the prefix an attack is spread over.
    let base = FlowSpecRule::to(inc.target(), action);
    let now = &inc.current;
    let f = &now.features;
    let icmp = if host.is_ipv6() { 58 } else { 1 };
    let mut out = Vec::new();
    if !now.verdict.classified() {
        return out;
    }
    // The components first; then, while the rules match less than
    // MIN_COVERAGE of the attack's samples, the other families present
    // (five families at 19 % each deserve five rules, not one) — but
    // never one that looks like the host's established sessions (a TCP
    // part with no flag to tell it from them).
    let mut parts: Vec<&crate::detect::classify::Component> =
        now.verdict.components.iter().collect();
    for p in &now.verdict.parts {
        if !parts.iter().any(|c| c.family == p.family) {
            parts.push(p);
        }
    }
    let significant = now.verdict.components.len();
    let items = now.details.seen.items().len() as f64;
    for (i, c) in parts.into_iter().enumerate() {
        if i >= significant {
            let covered = coverage(&out, &now.details).unwrap_or(1.0);
            if covered >= MIN_COVERAGE {
                break;
            }
            if c.family == Family::TcpFlood && dominant_tcp_flags(f.tcp_flags.as_slice()).is_none()
            {
                continue;
            }
            // A part is added only on evidence of its own: a few samples
            // of the host's own traffic (its clients' SYNs) are no attack.
            if c.share * items < MIN_COMPONENT_SAMPLES as f64 {
                continue;
            }
        }
        let rule = match c.family {
            // SYN-ACK reflection: the reflected answers, not the host's
            // own inbound SYNs.
            Family::SynFlood if c.vector.as_deref() == Some("syn_ack") => FlowSpecRule {
                protocols: vec![6],
                tcp_flags: Some(TcpFlags {
                    set: levee_bgp::model::tcp::SYN | levee_bgp::model::tcp::ACK,
                    unset: 0,
                }),
                ..base.clone()
            },
            Family::SynFlood => FlowSpecRule {
                protocols: vec![6],
                tcp_flags: Some(TcpFlags {
                    set: levee_bgp::model::tcp::SYN,
                    unset: levee_bgp::model::tcp::ACK,
                }),
                ..base.clone()
            },
            Family::TcpFlood => FlowSpecRule {
                protocols: vec![6],
                tcp_flags: dominant_tcp_flags(f.tcp_flags.as_slice()),
                ..base.clone()
            },
            Family::Amplification => {
                // Every reflected service, not only the heaviest (the
                // heaviest MAX_VALUES of them).
                let mut ports: Vec<Range> = c
                    .services
                    .iter()
                    .take(MAX_VALUES)
                    .map(|s| Range::one(s.port))
                    .collect();
                if ports.is_empty() {
                    if let Some(v) = c.vector.as_deref() {
                        ports.extend(
                            REFLECTORS
                                .iter()
                                .filter(|(_, name)| *name == v)
                                .map(|(p, _)| Range::one(*p)),
                        );
                    }
                }
                ports.sort();
                ports.dedup();
                if ports.is_empty() {
                    continue;
                }
                FlowSpecRule {
                    protocols: vec![17],
                    src_ports: ports,
                    ..base.clone()
                }
            }
            Family::UdpFlood => FlowSpecRule {
                protocols: vec![17],
                ..base.clone()
            },
            Family::IcmpFlood => {
                // The attack's ICMP types, never those path-MTU discovery
                // needs (IPv4 destination unreachable, IPv6 packet too
                // big): dropping them breaks the host's own connections.
                let pmtud = if host.is_ipv6() { 2 } else { 3 };
                let mut types: Vec<Range> = f
                    .icmp_types
                    .iter()
                    .filter(|t| **t != pmtud)
                    .take(MAX_VALUES)
                    .map(|t| Range::one(u16::from(*t)))
                    .collect();
                types.sort();
                if types.is_empty() && !f.icmp_types.is_empty() {
                    continue; // only PMTUD messages: no rule
                }
                FlowSpecRule {
                    protocols: vec![icmp],
                    icmp_types: types,
                    ..base.clone()
                }
            }
            Family::FragmentFlood => FlowSpecRule {
                fragment: Some(Fragment::IsFragment),
                ..base.clone()
            },
            Family::ProtocolFlood => {
                // IPv6 FlowSpec matches the upper-layer protocol: an
                // extension header's number would match nothing.
                let protocols: Vec<u8> = f
                    .protocols
                    .iter()
                    .copied()
                    .filter(|p| ![6, 17, 1, 58].contains(p) && !NOT_UPPER_LAYER.contains(p))
                    .collect();
                if protocols.is_empty() {
                    continue;
                }
                FlowSpecRule {
                    protocols,
                    ..base.clone()
                }
            }
        };
        let mut rule = with_lengths(c.family, rule, &now.details);
        if matches!(
            c.family,
            Family::SynFlood | Family::TcpFlood | Family::UdpFlood
        ) && c.vector.as_deref() != Some("syn_ack")
        {
            rule.dst_ports = dst_ports(&rule, &now.details);
        }
        if !out.contains(&rule) {
            out.push(rule);
        }
    }
    // From a few sources: a rule per source, matching only them.
    let out: Vec<FlowSpecRule> = match few_sources(inc) {
        Some(sources) => out
            .into_iter()
            .flat_map(|r| {
                sources.iter().map(move |s| FlowSpecRule {
                    src: Some(*s),
                    ..r.clone()
                })
            })
            .collect(),
        None => out,
    };
    // On part of a prefix: the rules on that part only.
    match cover(inc.target(), &out, &now.details) {
        Some(blocks) => out
            .into_iter()
            .flat_map(|r| {
                blocks.iter().map(move |b| FlowSpecRule {
                    dst: *b,
                    ..r.clone()
                })
            })
            .collect(),
        None => out,
    }
}

/// Whether a record whose destination's low 64 bits are `low` (0: not
/// known) falls in `dst`. The records held are all to the incident's
/// target, so what the low bits cannot tell (an IPv6 prefix of /64 or
/// shorter) is taken to match.
fn dst_in(dst: IpNet, low: u64) -> bool {
    if low == 0 {
        return true;
    }
    match dst {
        IpNet::V4(n) => n.contains(&std::net::Ipv4Addr::from(low as u32)),
        IpNet::V6(n) => {
            let len = n.prefix_len();
            if len <= 64 {
                return true;
            }
            let net = u128::from(n.network()) as u64;
            let mask = u64::MAX << (128 - u32::from(len));
            low & mask == net & mask
        }
    }
}

/// The sub-prefixes of a prefix incident's target that cover every
/// destination its rules' samples went to, when they are at most
/// [`MAX_COVER`] and together at most a quarter of the prefix's addresses:
/// an attack on part of a prefix gets rules on that part, sparing the
/// legitimate traffic of the rest (taken as spread over the prefix). None
/// — the whole prefix — when the attack covers more, when the samples are
/// too few to say where it goes ([`MIN_COVER_SAMPLES`]), or for an IPv6
/// prefix shorter than /64 (the records keep a destination's low 64 bits).
pub fn cover(
    target: IpNet,
    rules: &[FlowSpecRule],
    d: &crate::accounting::Details,
) -> Option<Vec<IpNet>> {
    if super::is_host(target) {
        return None;
    }
    // Destinations as bits below the prefix, in a `width`-bit space.
    let (width, fixed) = match target {
        IpNet::V4(n) => (32u32, u32::from(n.prefix_len())),
        IpNet::V6(n) if n.prefix_len() >= 64 => (64, u32::from(n.prefix_len()) - 64),
        IpNet::V6(_) => return None,
    };
    let keys: Vec<u64> = d
        .seen
        .items()
        .iter()
        .filter(|s| s.dst_low != 0 && rules.iter().any(|r| matches(r, s)))
        .map(|s| {
            if width == 32 {
                s.dst_low & 0xffff_ffff
            } else {
                s.dst_low
            }
        })
        .collect();
    if keys.len() < MIN_COVER_SAMPLES {
        return None;
    }
    // The longest block (prefix length in the space) holding all of `ks`.
    let common = |ks: &[u64]| -> u32 {
        let first = ks[0];
        let differ = ks.iter().fold(0u64, |acc, k| acc | (k ^ first));
        (differ.leading_zeros() - (64 - width)).min(width)
    };
    let block = |k: u64, len: u32| -> IpNet {
        let keep = if len == 0 {
            0
        } else {
            u64::MAX << (width - len)
        } & (u64::MAX >> (64 - width));
        let k = k & keep;
        match target {
            IpNet::V4(_) => {
                IpNet::V4(ipnet::Ipv4Net::new((k as u32).into(), len as u8).unwrap_or_default())
            }
            IpNet::V6(n) => {
                let high = u128::from(n.network()) & !u128::from(u64::MAX);
                let addr = std::net::Ipv6Addr::from(high | u128::from(k));
                IpNet::V6(ipnet::Ipv6Net::new(addr, (64 + len) as u8).unwrap_or_default())
            }
        }
    };
    let quarter = fixed + 2;
    if quarter > width {
        return None;
    }
    let whole = common(&keys);
    if whole >= quarter {
        return Some(vec![block(keys[0], whole)]);
    }
    // By quarter of the prefix: each quarter's keys in their own block.
    let mut blocks = Vec::new();
    let mut span = 0u128;
    for q in 0..4u64 {
        let part: Vec<u64> = keys
            .iter()
            .copied()
            .filter(|k| (k >> (width - quarter)) & 3 == q)
            .collect();
        if part.is_empty() {
            continue;
        }
        let len = common(&part);
        span += 1u128 << (width - len);
        blocks.push(block(part[0], len));
    }
    let quarter_span = 1u128 << (width - quarter);
    (blocks.len() <= MAX_COVER && span <= quarter_span).then_some(blocks)
}

/// Sub-prefixes a prefix's rules are split over at most (each is a rule
/// at the router).
pub const MAX_COVER: usize = 4;

/// Sampled records a cover is drawn from, at least.
pub const MIN_COVER_SAMPLES: usize = 30;

/// The share of an attack's sampled packets rules should match: rules are
/// added for the families present until they do; below it, what the rules
/// let through may call for the next level.
pub const MIN_COVERAGE: f64 = 0.9;

/// The destination ports of the sampled packets `rule` matches, when a
/// few (at most [`MAX_PORTS`], each at least a tenth) carry nine tenths of
/// them; none otherwise (a flood to random ports). Drawn from the
/// component's own samples: a SYN flood on port 80 beside a UDP flood to
/// random ports must not put port 80 in the UDP rule. Never port 0 (what a
/// record without its L4 header says).
fn dst_ports(rule: &FlowSpecRule, d: &crate::accounting::Details) -> Vec<Range> {
    let mut counts: Vec<(u16, u64)> = Vec::new();
    let mut total = 0u64;
    for s in d.seen.items().iter().filter(|s| matches(rule, s)) {
        total += s.weight;
        match counts.iter_mut().find(|(p, _)| *p == s.dst_port) {
            Some((_, n)) => *n += s.weight,
            None => counts.push((s.dst_port, s.weight)),
        }
    }
    let sampled = d.seen.items().iter().filter(|s| matches(rule, s)).count();
    if sampled < MIN_PORT_SAMPLES || total == 0 {
        return Vec::new();
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    let mut chosen = Vec::new();
    let mut covered = 0u64;
    for (port, n) in counts.into_iter().take(MAX_PORTS) {
        if port == 0 || (n as f64) < 0.1 * total as f64 {
            break;
        }
        chosen.push(Range::one(port));
        covered += n;
        if covered as f64 >= 0.9 * total as f64 {
            chosen.sort();
            return chosen;
        }
    }
    Vec::new()
}

/// Samples of a component a rule is drawn from, at least: enough for its
/// lengths and ports (the engine waits for them).
pub const MIN_COMPONENT_SAMPLES: usize = 20;

/// Samples a rule's destination ports are drawn from, at least (ten that
/// all go to one port say so plainly).
const MIN_PORT_SAMPLES: usize = 10;

/// One-packet samples a rule's length range is drawn from, at least.
const MIN_SIZED: usize = 20;

/// Narrows `rule` by the lengths of the sampled packets it matches (only
/// records of one packet say a length): a range with a margin when they
/// are alike; for amplification, when they are large, only large packets —
/// the host's own clients get small replies from the same ports (its
/// resolver's answers, its NTP), and those must still pass.
fn with_lengths(
    family: Family,
    mut rule: FlowSpecRule,
    d: &crate::accounting::Details,
) -> FlowSpecRule {
    if matches!(
        family,
        Family::FragmentFlood | Family::ProtocolFlood | Family::IcmpFlood
    ) {
        return rule;
    }
    let mut lengths: Vec<u32> = d
        .seen
        .items()
        .iter()
        .filter(|s| s.length > 0 && matches(&rule, s))
        .map(|s| u32::from(s.length))
        .collect();
    if lengths.len() < MIN_SIZED {
        return rule;
    }
    lengths.sort_unstable();
    let (lo, hi) = (lengths[0], lengths[lengths.len() - 1]);
    let margin = |v: u32| (v / 20).max(LENGTH_MARGIN);
    let range = if family == Family::Amplification {
        // The floor under the reflected packets: their 10th percentile, so
        // the host's own small replies among them (under a tenth) do not
        // pull it down to nothing.
        let floor = lengths[lengths.len() / 10];
        (floor >= AMPLIFIED).then(|| {
            (
                floor.saturating_sub(margin(floor)).max(AMPLIFIED / 2),
                u32::from(u16::MAX),
            )
        })
    } else {
        (hi - lo <= LENGTH_SPREAD).then(|| {
            (
                lo.saturating_sub(margin(lo)).max(20),
                hi.saturating_add(margin(hi)),
            )
        })
    };
    if let Some((lo, hi)) = range {
        if let (Ok(lo), Ok(hi)) = (
            u16::try_from(lo),
            u16::try_from(hi.min(u32::from(u16::MAX))),
        ) {
            rule.packet_lengths = vec![Range { lo, hi }];
        }
    }
    rule
}

/// IP protocol numbers that are not an upper layer a rule can match: IPv6
/// extension headers (hop-by-hop 0, routing 43, fragment 44, destination
/// options 60, mobility 135, HIP 139, shim6 140, experiments 253/254) and
/// "no next header" 59.
pub const NOT_UPPER_LAYER: [u8; 10] = [0, 43, 44, 59, 60, 135, 139, 140, 253, 254];

/// At most this many sources get rules of their own.
const MAX_SOURCES: usize = 4;

/// The sources of an attack when they are few (not spoofed, an estimate of
/// at most [`MAX_SOURCES`], and those carrying nine tenths of its packets).
fn few_sources(inc: &Incident) -> Option<Vec<IpNet>> {
    let now = &inc.current;
    let estimate = usize::try_from(now.verdict.sources_estimate).unwrap_or(usize::MAX);
    if now.verdict.spoofed || estimate == 0 || estimate > MAX_SOURCES {
        return None;
    }
    let top = now.details.top_sources.top();
    let total = now.details.packets.max(top.iter().map(|(_, n)| n).sum());
    let mut chosen = Vec::new();
    let mut covered = 0u64;
    for (addr, n) in top.iter().take(MAX_SOURCES) {
        chosen.push(host_net(addr.ip()));
        covered += n;
        if covered as f64 >= 0.9 * total as f64 {
            chosen.sort();
            return Some(chosen);
        }
    }
    None
}

/// A TCP flood's flags, when one combination dominates and it is not what
/// every established connection carries (a bare ACK or PSH+ACK rule would
/// drop the host's legitimate sessions too).
fn dominant_tcp_flags(kinds: &[&str]) -> Option<TcpFlags> {
    use levee_bgp::model::tcp::{ACK, FIN, PSH, RST, SYN, URG};
    let [only] = kinds else { return None };
    Some(match *only {
        "rst" => TcpFlags { set: RST, unset: 0 },
        "fin" => TcpFlags {
            set: FIN,
            unset: SYN | RST,
        },
        "syn_ack" => TcpFlags {
            set: SYN | ACK,
            unset: 0,
        },
        "xmas" => TcpFlags {
            set: FIN | PSH | URG,
            unset: 0,
        },
        _ => return None,
    })
}

/// Why a level has no route for a target as levee is configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// RTBH needs the next hop the routers discard to.
    #[error("no [bgp] {key}: RTBH needs the next hop routers discard to")]
    NoBlackholeNextHop { key: &'static str },
    /// Scrubbing by BGP needs communities that steer the route.
    #[error("no [scrubbing] communities: nothing would steer the route")]
    NoCommunities,
    /// Scrubbing by BGP needs a next hop for the diverted route.
    #[error("no next hop for diverted routes ([scrubbing] or [bgp])")]
    NoDivertNextHop,
    /// A prefix length the address family cannot have.
    #[error("prefix length {len} is too long for {addr}")]
    Length { addr: IpAddr, len: u8 },
}

/// `addr/len`, truncated to its network.
fn net(addr: IpAddr, len: u8) -> Result<IpNet, RouteError> {
    IpNet::new(addr, len)
        .map(|n| n.trunc())
        .map_err(|_| RouteError::Length { addr, len })
}

/// The RTBH route for a host, or why there is none.
pub fn blackhole(host: IpAddr, c: &Config) -> Result<BlackholeRoute, RouteError> {
    blackhole_of(host_net(host), c)
}

/// The RTBH route for a host or a whole prefix (the engine allows a
/// prefix only where the hostgroup's policy says so: `prefix_rtbh`).
pub fn blackhole_of(target: IpNet, c: &Config) -> Result<BlackholeRoute, RouteError> {
    let host = target.addr();
    let next_hop = if host.is_ipv6() {
        c.bgp.next_hop6
    } else {
        c.bgp.next_hop
    }
    .ok_or(RouteError::NoBlackholeNextHop {
        key: if host.is_ipv6() {
            "next_hop6"
        } else {
            "next_hop"
        },
    })?;
    let mut communities = vec![c.bgp.blackhole_community];
    if c.bgp.blackhole_community != Community::NO_EXPORT {
        communities.push(Community::NO_EXPORT);
    }
    Ok(BlackholeRoute {
        prefix: target.trunc(),
        next_hop,
        communities,
    })
}

/// The scrubbing diversion for a host, or why there is none. With a
/// provider endpoint (`[scrubbing] http_url`) the diversion is requested
/// there: the route only names the prefix (and the host as next hop).
pub fn diversion(host: IpAddr, c: &Config) -> Result<Diversion, RouteError> {
    diversion_of(host_net(host), c)
}

/// The scrubbing diversion for a host or a prefix: the configured
/// more-specific around it, or the prefix itself when that is wider.
pub fn diversion_of(target: IpNet, c: &Config) -> Result<Diversion, RouteError> {
    let host = target.addr();
    let within = |len: u8| len.min(target.prefix_len());
    if c.scrubbing.http_url.is_some() {
        let len = within(if host.is_ipv6() {
            c.scrubbing.prefix_v6
        } else {
            c.scrubbing.prefix_v4
        });
        return Ok(Diversion {
            prefix: net(host, len)?,
            next_hop: host,
            communities: Vec::new(),
        });
    }
    if c.scrubbing.communities.is_empty() {
        return Err(RouteError::NoCommunities);
    }
    let (next_hop, len) = if host.is_ipv6() {
        (
            c.scrubbing.next_hop6.or(c.bgp.next_hop6),
            c.scrubbing.prefix_v6,
        )
    } else {
        (
            c.scrubbing.next_hop.or(c.bgp.next_hop),
            c.scrubbing.prefix_v4,
        )
    };
    let next_hop = next_hop.ok_or(RouteError::NoDivertNextHop)?;
    let prefix = net(host, within(len))?;
    let mut communities = c.scrubbing.communities.clone();
    communities.sort();
    communities.dedup();
    Ok(Diversion {
        prefix,
        next_hop,
        communities,
    })
}

/// The share of a host's legitimate packets (its profile before the
/// attack) that `rule` would also match, judged by protocol, TCP flags and
/// fragments. Ports and lengths are not in the profile, so this is an upper
/// bound; 0 for a host with no legitimate traffic on record; `None` —
/// unknown — with too little history to judge by.
pub fn collateral(rule: &FlowSpecRule, legit: &crate::detect::Legit) -> Option<f64> {
    use crate::accounting::class;
    let l = |c: usize| f64::from(legit.pps[c]);
    let total = l(class::ALL);
    if !legit.learnt {
        return None;
    }
    if total < 1.0 {
        return Some(0.0);
    }
    let matched = if rule.fragment.is_some() {
        l(class::FRAGMENT)
    } else if rule.protocols.is_empty() {
        total
    } else {
        let syn_only = rule.tcp_flags.is_some_and(|t| {
            t.set & levee_bgp::model::tcp::SYN != 0 && t.unset & levee_bgp::model::tcp::ACK != 0
        });
        rule.protocols
            .iter()
            .map(|p| match p {
                6 if syn_only => l(class::TCP_SYN),
                6 => l(class::TCP),
                17 => l(class::UDP),
                1 | 58 => l(class::ICMP),
                _ => l(class::OTHER),
            })
            .sum()
    };
    Some((matched / total).min(1.0))
}

/// Whether `rule` matches a sampled record (of a packet to the rule's
/// destination): the rule's semantics, component by component (RFC 8955).
pub fn matches(rule: &FlowSpecRule, s: &crate::accounting::sketch::Seen) -> bool {
    use levee_collectors::record::flags;
    let in_ranges = |ranges: &[Range], v: u16| ranges.iter().any(|r| r.lo <= v && v <= r.hi);
    if !dst_in(rule.dst, s.dst_low) {
        return false;
    }
    if let Some(src) = rule.src {
        if !src.contains(&s.src.ip()) {
            return false;
        }
    }
    if !rule.protocols.is_empty() && !rule.protocols.contains(&s.protocol) {
        return false;
    }
    let later = s.flags & flags::LATER_FRAGMENT != 0;
    let no_l4 = later || s.flags & flags::NO_L4 != 0;
    let has_ports = !no_l4 && matches!(s.protocol, 6 | 17 | 132);
    let port_ok =
        |ranges: &[Range], port: u16| ranges.is_empty() || (has_ports && in_ranges(ranges, port));
    if !port_ok(&rule.src_ports, s.src_port) || !port_ok(&rule.dst_ports, s.dst_port) {
        return false;
    }
    // A flow's average length is not a packet's: unknown lengths are taken
    // to match (rules carry lengths only from one-packet records).
    if !rule.packet_lengths.is_empty()
        && s.length != 0
        && !in_ranges(&rule.packet_lengths, s.length)
    {
        return false;
    }
    if let Some(t) = rule.tcp_flags {
        if s.protocol != 6 || no_l4 || s.tcp_flags & t.set != t.set || s.tcp_flags & t.unset != 0 {
            return false;
        }
    }
    let icmp_ok = rule.icmp_types.is_empty()
        || (matches!(s.protocol, 1 | 58)
            && !no_l4
            && in_ranges(&rule.icmp_types, u16::from(s.icmp_type)));
    if !icmp_ok {
        return false;
    }
    match rule.fragment {
        None => true,
        Some(Fragment::IsFragment) => s.flags & flags::FRAGMENT != 0,
        Some(Fragment::NotFragment) => s.flags & flags::FRAGMENT == 0,
        Some(Fragment::First) => s.flags & flags::FRAGMENT != 0 && !later,
        Some(Fragment::Last) => later,
    }
}

/// The share of the attack's recent packets (as sampled) that `rules`
/// together match; None without samples.
pub fn coverage<'a>(
    rules: impl IntoIterator<Item = &'a FlowSpecRule> + Clone,
    details: &crate::accounting::Details,
) -> Option<f64> {
    details
        .seen
        .share(|s| rules.clone().into_iter().any(|r| matches(r, s)))
}
