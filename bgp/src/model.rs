//! The routes levee announces, in levee's own terms: a FlowSpec rule
//! (RFC 8955, RFC 8956 for IPv6), a blackhole route (RTBH, RFC 7999) and a
//! scrubbing diversion. Nothing here knows GoBGP; `crate::gobgp` translates.
//!
//! Every type is a plain value with `Eq` and `Hash`, so a route is its own
//! identity: the intent store keys on [`Route::key`], and reconciliation
//! compares what gobgpd holds with what levee means by equality.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A route levee announces through its BGP speaker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Route {
    FlowSpec(FlowSpecRule),
    Blackhole(BlackholeRoute),
    Divert(Diversion),
}

impl Route {
    /// The address family: true for IPv6.
    pub fn is_ipv6(&self) -> bool {
        match self {
            Route::FlowSpec(r) => r.dst.addr().is_ipv6(),
            Route::Blackhole(r) => r.prefix.addr().is_ipv6(),
            Route::Divert(r) => r.prefix.addr().is_ipv6(),
        }
    }

    /// The destination prefix the route is about.
    pub fn prefix(&self) -> IpNet {
        match self {
            Route::FlowSpec(r) => r.dst,
            Route::Blackhole(r) => r.prefix,
            Route::Divert(r) => r.prefix,
        }
    }

    /// What identifies the route in BGP (its NLRI and family): two routes
    /// with the same key replace each other in a RIB. Attributes (next hop,
    /// communities, FlowSpec actions) are not part of it.
    pub fn key(&self) -> String {
        match self {
            Route::FlowSpec(r) => format!("flowspec {}", r.matcher()),
            // A blackhole and a diversion of one prefix are one NLRI.
            Route::Blackhole(BlackholeRoute { prefix, .. })
            | Route::Divert(Diversion { prefix, .. }) => format!("unicast {prefix}"),
        }
    }

    /// Whether announcing `self` and `other` puts the same thing on the
    /// wire: the same NLRI and attributes, communities in any order. (A
    /// blackhole route with a custom community reads back from a RIB as a
    /// diversion; it is still the same announcement.)
    pub fn same_announcement(&self, other: &Route) -> bool {
        let canonical = |r: &Route| {
            r.unicast().map(|(prefix, next_hop, c)| {
                let mut c = c.to_vec();
                c.sort();
                c.dedup();
                (prefix, next_hop, c)
            })
        };
        match (self, other) {
            (Route::FlowSpec(a), Route::FlowSpec(b)) => a == b,
            _ => canonical(self).is_some_and(|a| canonical(other) == Some(a)),
        }
    }

    /// Prefix, next hop and communities of a unicast route (a blackhole or
    /// a diversion); `None` for FlowSpec.
    pub fn unicast(&self) -> Option<(IpNet, IpAddr, &[Community])> {
        match self {
            Route::Blackhole(BlackholeRoute {
                prefix,
                next_hop,
                communities,
            })
            | Route::Divert(Diversion {
                prefix,
                next_hop,
                communities,
            }) => Some((*prefix, *next_hop, communities)),
            Route::FlowSpec(_) => None,
        }
    }
}

impl fmt::Display for Route {
    /// One line an operator reads (and close to the `gobgp` CLI's syntax).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::FlowSpec(r) => write!(f, "flowspec match {} then {}", r.matcher(), r.action),
            Route::Blackhole(r) => write!(
                f,
                "blackhole {} next-hop {} community {}",
                r.prefix,
                r.next_hop,
                join(&r.communities)
            ),
            Route::Divert(r) => write!(
                f,
                "divert {} next-hop {} community {}",
                r.prefix,
                r.next_hop,
                join(&r.communities)
            ),
        }
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// An inclusive range of values (ports, packet lengths, ICMP types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Range {
    pub lo: u16,
    pub hi: u16,
}

impl Range {
    pub fn one(v: u16) -> Range {
        Range { lo: v, hi: v }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "={}", self.lo)
        } else {
            write!(f, ">={}&<={}", self.lo, self.hi)
        }
    }
}

/// TCP flag bits as in the TCP header (FIN 0x01 … CWR 0x80).
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// A TCP flags match: every bit of `set` is set and no bit of `unset` is.
/// A SYN flood is `set: SYN, unset: ACK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TcpFlags {
    pub set: u8,
    pub unset: u8,
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(u8, &str); 6] = [
            (tcp::FIN, "F"),
            (tcp::SYN, "S"),
            (tcp::RST, "R"),
            (tcp::PSH, "P"),
            (tcp::ACK, "A"),
            (tcp::URG, "U"),
        ];
        let mut parts = Vec::new();
        for (bit, name) in NAMES {
            if self.set & bit != 0 {
                parts.push(format!("={name}"));
            }
        }
        for (bit, name) in NAMES {
            if self.unset & bit != 0 {
                parts.push(format!("!{name}"));
            }
        }
        write!(f, "{}", parts.join("&"))
    }
}

/// Which packets by fragmentation (RFC 8955 §4.2.2.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fragment {
    /// Any fragment (first or not).
    IsFragment,
    /// First fragments only.
    First,
    /// Last fragments only.
    Last,
    /// Unfragmented packets only.
    NotFragment,
}

impl fmt::Display for Fragment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fragment::IsFragment => "is-fragment",
            Fragment::First => "first-fragment",
            Fragment::Last => "last-fragment",
            Fragment::NotFragment => "not-a-fragment",
        })
    }
}

/// What a FlowSpec rule does with the traffic it matches (RFC 8955 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum FlowAction {
    /// traffic-rate 0.
    Discard,
    /// traffic-rate-bytes: at most this many bytes per second (make it
    /// with [`FlowAction::rate_limit`]).
    RateLimit { bytes_per_second: u32 },
    /// redirect to the VRF with route target `asn:value`.
    Redirect { asn: u16, value: u32 },
    /// traffic-marking: set the DSCP.
    MarkDscp { dscp: u8 },
}

impl FlowAction {
    /// A rate limit, rounded to what BGP carries (an IEEE 754 single, RFC
    /// 8955 §7.3), so the rule read back from a RIB equals the one made.
    pub fn rate_limit(bytes_per_second: u32) -> FlowAction {
        FlowAction::RateLimit {
            bytes_per_second: bytes_per_second as f32 as u32,
        }
    }
}

impl fmt::Display for FlowAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowAction::Discard => f.write_str("discard"),
            FlowAction::RateLimit { bytes_per_second } => {
                write!(f, "rate-limit {bytes_per_second} bytes/s")
            }
            FlowAction::Redirect { asn, value } => write!(f, "redirect {asn}:{value}"),
            FlowAction::MarkDscp { dscp } => write!(f, "mark {dscp}"),
        }
    }
}

/// A FlowSpec rule. Lists are alternatives (a packet matches a component
/// when it matches any range of it); components are all required. Empty
/// lists and `None` match everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowSpecRule {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<IpNet>,
    /// IP protocol (IPv6: next header) numbers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src_ports: Vec<Range>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst_ports: Vec<Range>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub icmp_types: Vec<Range>,
    /// IP total length (IPv6: payload + 40), RFC 8955 §4.2.2.10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packet_lengths: Vec<Range>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<TcpFlags>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragment: Option<Fragment>,
    pub action: FlowAction,
}

impl FlowSpecRule {
    /// A rule that matches everything to `dst` and does `action`.
    pub fn to(dst: IpNet, action: FlowAction) -> FlowSpecRule {
        FlowSpecRule {
            dst,
            src: None,
            protocols: Vec::new(),
            src_ports: Vec::new(),
            dst_ports: Vec::new(),
            icmp_types: Vec::new(),
            packet_lengths: Vec::new(),
            tcp_flags: None,
            fragment: None,
            action,
        }
    }

    /// The match part, one line.
    pub fn matcher(&self) -> String {
        let mut s = format!("destination {}", self.dst);
        if let Some(src) = self.src {
            s += &format!(" source {src}");
        }
        let list = |name: &str, items: &[Range]| -> String {
            if items.is_empty() {
                String::new()
            } else {
                format!(
                    " {name} {}",
                    items
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
        };
        let protocols: Vec<Range> = self
            .protocols
            .iter()
            .map(|p| Range::one(u16::from(*p)))
            .collect();
        s += &list("protocol", &protocols);
        s += &list("source-port", &self.src_ports);
        s += &list("destination-port", &self.dst_ports);
        s += &list("icmp-type", &self.icmp_types);
        s += &list("packet-length", &self.packet_lengths);
        if let Some(t) = self.tcp_flags {
            s += &format!(" tcp-flags {t}");
        }
        if let Some(fr) = self.fragment {
            s += &format!(" fragment {fr}");
        }
        s
    }
}

/// A BGP standard community, `asn:value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// RFC 7999 BLACKHOLE, 65535:666.
    pub const BLACKHOLE: Community = Community(0xFFFF_029A);
    /// RFC 1997 NO_EXPORT.
    pub const NO_EXPORT: Community = Community(0xFFFF_FF01);

    pub fn new(asn: u16, value: u16) -> Community {
        Community(u32::from(asn) << 16 | u32::from(value))
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xFFFF)
    }
}

/// Why a text is not a community.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadCommunity {
    #[error("community `{0}` is not ASN:VALUE")]
    NotAsnValue(String),
    #[error("community `{text}`: `{part}` is not a 16-bit number")]
    NotU16 { text: String, part: String },
}

impl std::str::FromStr for Community {
    type Err = BadCommunity;
    fn from_str(s: &str) -> Result<Community, BadCommunity> {
        let (a, v) = s
            .split_once(':')
            .ok_or_else(|| BadCommunity::NotAsnValue(s.to_owned()))?;
        let half = |part: &str| {
            part.trim()
                .parse::<u16>()
                .map_err(|_| BadCommunity::NotU16 {
                    text: s.to_owned(),
                    part: part.to_owned(),
                })
        };
        Ok(Community::new(half(a)?, half(v)?))
    }
}

impl Serialize for Community {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Community {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Community, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Remote triggered blackhole: a host route with the blackhole community
/// and the next hop the routers discard to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlackholeRoute {
    pub prefix: IpNet,
    pub next_hop: IpAddr,
    pub communities: Vec<Community>,
}

impl BlackholeRoute {
    /// RFC 7999: BLACKHOLE, and NO_EXPORT so the route stays in the
    /// neighbouring AS.
    pub fn rfc7999(prefix: IpNet, next_hop: IpAddr) -> BlackholeRoute {
        BlackholeRoute {
            prefix,
            next_hop,
            communities: vec![Community::BLACKHOLE, Community::NO_EXPORT],
        }
    }
}

/// Scrubbing diversion: a more-specific prefix toward the scrubbing
/// centre, tagged with the communities that steer it there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Diversion {
    pub prefix: IpNet,
    pub next_hop: IpAddr,
    pub communities: Vec<Community>,
}

/// A per-upstream rewrite of a community on the way out (MIT-12): routes
/// carrying `from` reach the neighbour `neighbor` with `to` instead (all
/// their communities replaced), e.g. the RFC 7999 blackhole community
/// translated to the one a transit provider documents.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Translation {
    pub neighbor: IpAddr,
    pub from: Community,
    pub to: Vec<Community>,
}
