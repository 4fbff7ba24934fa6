//! Translation between levee's routes and GoBGP's v3 API (`apipb`).
//!
//! The only module that sees generated types. [`path`] builds the `Path`
//! gobgpd is given for a route; [`route`] reads one back (what
//! reconciliation compares). GoBGP's rules, learnt from its source
//! (`cmd/gobgp/global.go`, `pkg/apiutil`) and from this machine: IPv4
//! unicast carries its next hop in a `NextHopAttribute`, every other family
//! (IPv6 unicast, both FlowSpec families) in an `MpReachNLRIAttribute` that
//! also repeats the NLRI; FlowSpec needs a next hop too (0.0.0.0 / ::);
//! FlowSpec operator bytes are sent without the end-of-list and length bits
//! (gobgpd sets them) and come back with them.

use std::net::IpAddr;

use ipnet::IpNet;
use prost::Message;
use prost_types::Any;

use crate::model::{
    BlackholeRoute, Community, Diversion, FlowAction, FlowSpecRule, Fragment, Range, Route,
    TcpFlags,
};

/// The generated GoBGP API (crate-private: the rest of levee speaks `model`).
#[allow(clippy::all, dead_code, missing_docs, unreachable_pub)]
pub mod apipb {
    tonic::include_proto!("apipb");
}

use apipb::family::{Afi, Safi};

fn any<M: Message>(name: &str, m: &M) -> Any {
    Any {
        type_url: format!("type.googleapis.com/apipb.{name}"),
        value: m.encode_to_vec(),
    }
}

fn is<M: Message + Default>(a: &Any, name: &str) -> Option<M> {
    let short = a.type_url.rsplit('/').next()?;
    if short != format!("apipb.{name}") {
        return None;
    }
    M::decode(a.value.as_slice()).ok()
}

/// The BGP family of a route.
pub fn family(route: &Route) -> apipb::Family {
    let afi = if route.is_ipv6() { Afi::Ip6 } else { Afi::Ip };
    let safi = match route {
        Route::FlowSpec(_) => Safi::FlowSpecUnicast,
        Route::Blackhole(_) | Route::Divert(_) => Safi::Unicast,
    };
    apipb::Family {
        afi: afi as i32,
        safi: safi as i32,
    }
}

/// The four families levee announces in.
pub fn families() -> [apipb::Family; 4] {
    let f = |afi: Afi, safi: Safi| apipb::Family {
        afi: afi as i32,
        safi: safi as i32,
    };
    [
        f(Afi::Ip, Safi::Unicast),
        f(Afi::Ip6, Safi::Unicast),
        f(Afi::Ip, Safi::FlowSpecUnicast),
        f(Afi::Ip6, Safi::FlowSpecUnicast),
    ]
}

// FlowSpec component types (RFC 8955 §4.2.2).
const DST_PREFIX: u32 = 1;
const SRC_PREFIX: u32 = 2;
const PROTOCOL: u32 = 3;
const DST_PORT: u32 = 5;
const SRC_PORT: u32 = 6;
const ICMP_TYPE: u32 = 7;
const TCP_FLAGS: u32 = 9;
const PACKET_LENGTH: u32 = 10;
const FRAGMENT: u32 = 12;

// Operator bits (RFC 8955 §4.2.1). End-of-list (0x80) and the length
// (0x30) are gobgpd's to set.
const OP_AND: u32 = 0x40;
const NUM_LT: u32 = 0x04;
const NUM_GT: u32 = 0x02;
const NUM_EQ: u32 = 0x01;
const BIT_NOT: u32 = 0x02;
const BIT_MATCH: u32 = 0x01;
const OP_FRAMING: u32 = 0x80 | 0x30;

// Fragment bits.
const FRAG_IS: u64 = 0x02;
const FRAG_FIRST: u64 = 0x04;
const FRAG_LAST: u64 = 0x08;

fn item(op: u32, value: u64) -> apipb::FlowSpecComponentItem {
    apipb::FlowSpecComponentItem { op, value }
}

fn numeric(kind: u32, ranges: &[Range]) -> Option<Any> {
    if ranges.is_empty() {
        return None;
    }
    let mut items = Vec::new();
    for r in ranges {
        if r.lo == r.hi {
            items.push(item(NUM_EQ, u64::from(r.lo)));
        } else {
            items.push(item(NUM_GT | NUM_EQ, u64::from(r.lo)));
            items.push(item(OP_AND | NUM_LT | NUM_EQ, u64::from(r.hi)));
        }
    }
    Some(any(
        "FlowSpecComponent",
        &apipb::FlowSpecComponent {
            r#type: kind,
            items,
        },
    ))
}

fn prefix_rule(kind: u32, p: IpNet) -> Any {
    any(
        "FlowSpecIPPrefix",
        &apipb::FlowSpecIpPrefix {
            r#type: kind,
            prefix_len: u32::from(p.prefix_len()),
            prefix: p.network().to_string(),
            offset: 0,
        },
    )
}

fn flowspec_nlri(r: &FlowSpecRule) -> Any {
    let mut rules = vec![prefix_rule(DST_PREFIX, r.dst)];
    if let Some(src) = r.src {
        rules.push(prefix_rule(SRC_PREFIX, src));
    }
    let protocols: Vec<Range> = r
        .protocols
        .iter()
        .map(|p| Range::one(u16::from(*p)))
        .collect();
    rules.extend(numeric(PROTOCOL, &protocols));
    rules.extend(numeric(DST_PORT, &r.dst_ports));
    rules.extend(numeric(SRC_PORT, &r.src_ports));
    rules.extend(numeric(ICMP_TYPE, &r.icmp_types));
    if let Some(t) = r.tcp_flags {
        let mut items = Vec::new();
        if t.set != 0 {
            items.push(item(BIT_MATCH, u64::from(t.set)));
        }
        if t.unset != 0 {
            let and = if items.is_empty() { 0 } else { OP_AND };
            items.push(item(and | BIT_NOT, u64::from(t.unset)));
        }
        if !items.is_empty() {
            rules.push(any(
                "FlowSpecComponent",
                &apipb::FlowSpecComponent {
                    r#type: TCP_FLAGS,
                    items,
                },
            ));
        }
    }
    rules.extend(numeric(PACKET_LENGTH, &r.packet_lengths));
    if let Some(f) = r.fragment {
        let items = match f {
            Fragment::IsFragment => vec![item(0, FRAG_IS)],
            Fragment::First => vec![item(0, FRAG_FIRST)],
            Fragment::Last => vec![item(0, FRAG_LAST)],
            Fragment::NotFragment => vec![item(BIT_NOT, FRAG_IS)],
        };
        rules.push(any(
            "FlowSpecComponent",
            &apipb::FlowSpecComponent {
                r#type: FRAGMENT,
                items,
            },
        ));
    }
    any("FlowSpecNLRI", &apipb::FlowSpecNlri { rules })
}

fn unicast_nlri(p: IpNet) -> Any {
    any(
        "IPAddressPrefix",
        &apipb::IpAddressPrefix {
            prefix_len: u32::from(p.prefix_len()),
            prefix: p.network().to_string(),
        },
    )
}

fn action_communities(a: FlowAction) -> Any {
    let c = match a {
        FlowAction::Discard => any(
            "TrafficRateExtended",
            &apipb::TrafficRateExtended { asn: 0, rate: 0.0 },
        ),
        FlowAction::RateLimit { bytes_per_second } => any(
            "TrafficRateExtended",
            &apipb::TrafficRateExtended {
                asn: 0,
                rate: bytes_per_second as f32,
            },
        ),
        FlowAction::Redirect { asn, value } => any(
            "RedirectTwoOctetAsSpecificExtended",
            &apipb::RedirectTwoOctetAsSpecificExtended {
                asn: u32::from(asn),
                local_admin: value,
            },
        ),
        FlowAction::MarkDscp { dscp } => any(
            "TrafficRemarkExtended",
            &apipb::TrafficRemarkExtended {
                dscp: u32::from(dscp),
            },
        ),
    };
    any(
        "ExtendedCommunitiesAttribute",
        &apipb::ExtendedCommunitiesAttribute {
            communities: vec![c],
        },
    )
}

/// The `Path` that announces (or, given to `DeletePath`, withdraws) `route`.
pub fn path(route: &Route) -> apipb::Path {
    let family = family(route);
    let (nlri, next_hop, communities, extended) = match route {
        Route::FlowSpec(r) => {
            let nh = if route.is_ipv6() { "::" } else { "0.0.0.0" };
            (
                flowspec_nlri(r),
                nh.to_owned(),
                Vec::new(),
                Some(action_communities(r.action)),
            )
        }
        Route::Blackhole(_) | Route::Divert(_) => {
            let (prefix, next_hop, communities) = route.unicast().unwrap_or_else(|| unreachable!());
            (
                unicast_nlri(prefix),
                next_hop.to_string(),
                communities.to_vec(),
                None,
            )
        }
    };
    let mut pattrs = vec![any(
        "OriginAttribute",
        &apipb::OriginAttribute { origin: 0 },
    )];
    let ipv4_unicast = family.afi == Afi::Ip as i32 && family.safi == Safi::Unicast as i32;
    if ipv4_unicast {
        pattrs.push(any(
            "NextHopAttribute",
            &apipb::NextHopAttribute { next_hop },
        ));
    } else {
        pattrs.push(any(
            "MpReachNLRIAttribute",
            &apipb::MpReachNlriAttribute {
                family: Some(family),
                next_hops: vec![next_hop],
                nlris: vec![nlri.clone()],
            },
        ));
    }
    if !communities.is_empty() {
        pattrs.push(any(
            "CommunitiesAttribute",
            &apipb::CommunitiesAttribute {
                communities: communities.iter().map(|c| c.0).collect(),
            },
        ));
    }
    pattrs.extend(extended);
    apipb::Path {
        nlri: Some(nlri),
        pattrs,
        family: Some(family),
        ..Default::default()
    }
}

/// Reads a path back into a route; `None` for what levee never announces
/// (other families, FlowSpec components or actions levee does not use).
pub fn route(p: &apipb::Path) -> Option<Route> {
    let family = p.family.as_ref()?;
    let nlri = p.nlri.as_ref()?;
    let mut next_hop = None;
    let mut communities = Vec::new();
    let mut action = None;
    for a in &p.pattrs {
        if let Some(nh) = is::<apipb::NextHopAttribute>(a, "NextHopAttribute") {
            next_hop = nh.next_hop.parse::<IpAddr>().ok();
        } else if let Some(mp) = is::<apipb::MpReachNlriAttribute>(a, "MpReachNLRIAttribute") {
            next_hop = mp.next_hops.first().and_then(|n| n.parse().ok());
        } else if let Some(c) = is::<apipb::CommunitiesAttribute>(a, "CommunitiesAttribute") {
            communities = c.communities.into_iter().map(Community).collect();
        } else if let Some(x) =
            is::<apipb::ExtendedCommunitiesAttribute>(a, "ExtendedCommunitiesAttribute")
        {
            for c in &x.communities {
                if let Some(r) = is::<apipb::TrafficRateExtended>(c, "TrafficRateExtended") {
                    action = Some(if r.rate <= 0.0 {
                        FlowAction::Discard
                    } else {
                        FlowAction::RateLimit {
                            bytes_per_second: r.rate as u32,
                        }
                    });
                } else if let Some(r) = is::<apipb::RedirectTwoOctetAsSpecificExtended>(
                    c,
                    "RedirectTwoOctetAsSpecificExtended",
                ) {
                    action = Some(FlowAction::Redirect {
                        asn: u16::try_from(r.asn).ok()?,
                        value: r.local_admin,
                    });
                } else if let Some(r) =
                    is::<apipb::TrafficRemarkExtended>(c, "TrafficRemarkExtended")
                {
                    action = Some(FlowAction::MarkDscp {
                        dscp: u8::try_from(r.dscp).ok()?,
                    });
                }
            }
        }
    }
    if family.safi == Safi::Unicast as i32 {
        let n = is::<apipb::IpAddressPrefix>(nlri, "IPAddressPrefix")?;
        let prefix = IpNet::new(n.prefix.parse().ok()?, u8::try_from(n.prefix_len).ok()?).ok()?;
        let next_hop = next_hop?;
        communities.sort();
        return Some(if communities.contains(&Community::BLACKHOLE) {
            Route::Blackhole(BlackholeRoute {
                prefix,
                next_hop,
                communities: sorted_like_rfc7999(communities),
            })
        } else {
            Route::Divert(Diversion {
                prefix,
                next_hop,
                communities,
            })
        });
    }
    if family.safi != Safi::FlowSpecUnicast as i32 {
        return None;
    }
    let n = is::<apipb::FlowSpecNlri>(nlri, "FlowSpecNLRI")?;
    let mut rule: Option<FlowSpecRule> = None;
    let mut components = Vec::new();
    for r in &n.rules {
        if let Some(pfx) = is::<apipb::FlowSpecIpPrefix>(r, "FlowSpecIPPrefix") {
            let net =
                IpNet::new(pfx.prefix.parse().ok()?, u8::try_from(pfx.prefix_len).ok()?).ok()?;
            match pfx.r#type {
                DST_PREFIX => rule = Some(FlowSpecRule::to(net, action?)),
                SRC_PREFIX => components.push(Err(net)),
                _ => return None,
            }
        } else if let Some(c) = is::<apipb::FlowSpecComponent>(r, "FlowSpecComponent") {
            components.push(Ok(c));
        } else {
            return None;
        }
    }
    let mut rule = rule?;
    for c in components {
        match c {
            Err(src) => rule.src = Some(src),
            Ok(c) => match c.r#type {
                PROTOCOL => {
                    rule.protocols = ranges(&c.items)?
                        .into_iter()
                        .map(|r| u8::try_from(r.lo).ok().filter(|_| r.lo == r.hi))
                        .collect::<Option<_>>()?;
                }
                DST_PORT => rule.dst_ports = ranges(&c.items)?,
                SRC_PORT => rule.src_ports = ranges(&c.items)?,
                ICMP_TYPE => rule.icmp_types = ranges(&c.items)?,
                PACKET_LENGTH => rule.packet_lengths = ranges(&c.items)?,
                TCP_FLAGS => {
                    let mut t = TcpFlags { set: 0, unset: 0 };
                    for i in &c.items {
                        let v = u8::try_from(i.value).ok()?;
                        match i.op & !(OP_FRAMING | OP_AND) {
                            BIT_MATCH => t.set |= v,
                            BIT_NOT => t.unset |= v,
                            _ => return None,
                        }
                    }
                    rule.tcp_flags = Some(t);
                }
                FRAGMENT => {
                    let [i] = c.items.as_slice() else { return None };
                    rule.fragment = Some(match (i.op & !OP_FRAMING, i.value) {
                        (0, FRAG_IS) => Fragment::IsFragment,
                        (0, FRAG_FIRST) => Fragment::First,
                        (0, FRAG_LAST) => Fragment::Last,
                        (BIT_NOT, FRAG_IS) => Fragment::NotFragment,
                        _ => return None,
                    });
                }
                _ => return None,
            },
        }
    }
    Some(Route::FlowSpec(rule))
}

/// Communities in the order `BlackholeRoute::rfc7999` makes them, so a
/// route read back equals the one announced.
fn sorted_like_rfc7999(mut c: Vec<Community>) -> Vec<Community> {
    c.sort_by_key(|x| match *x {
        Community::BLACKHOLE => (0, 0),
        Community::NO_EXPORT => (1, 0),
        other => (2, other.0),
    });
    c
}

/// Reads the numeric items levee writes (`=v`, or `>=lo` AND `<=hi`) back
/// into ranges.
fn ranges(items: &[apipb::FlowSpecComponentItem]) -> Option<Vec<Range>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let op = items[i].op & !OP_FRAMING;
        let v = u16::try_from(items[i].value).ok()?;
        match op {
            NUM_EQ => out.push(Range::one(v)),
            x if x == NUM_GT | NUM_EQ => {
                let next = items.get(i + 1)?;
                if next.op & !OP_FRAMING != OP_AND | NUM_LT | NUM_EQ {
                    return None;
                }
                out.push(Range {
                    lo: v,
                    hi: u16::try_from(next.value).ok()?,
                });
                i += 1;
            }
            _ => return None,
        }
        i += 1;
    }
    Some(out)
}

/// Whether a path in gobgpd's RIB was put there over the API (by levee or
/// an operator), rather than learnt from a peer.
pub fn is_local(p: &apipb::Path) -> bool {
    !p.is_from_external && (p.neighbor_ip.is_empty() || p.neighbor_ip == "<nil>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (prop::arbitrary::any::<u32>(), 8u8..=32)
                .prop_map(|(a, l)| { IpNet::new(Ipv4Addr::from(a).into(), l).unwrap().trunc() }),
            (prop::arbitrary::any::<u128>(), 16u8..=128)
                .prop_map(|(a, l)| { IpNet::new(Ipv6Addr::from(a).into(), l).unwrap().trunc() }),
        ]
    }

    fn ranges() -> impl Strategy<Value = Vec<Range>> {
        prop::collection::vec(
            (prop::arbitrary::any::<u16>(), 0u16..1000).prop_map(|(lo, w)| Range {
                lo,
                hi: lo.saturating_add(w),
            }),
            0..3,
        )
    }

    fn action() -> impl Strategy<Value = FlowAction> {
        prop_oneof![
            Just(FlowAction::Discard),
            (1u32..).prop_map(FlowAction::rate_limit),
            (prop::arbitrary::any::<u16>(), prop::arbitrary::any::<u32>())
                .prop_map(|(asn, value)| FlowAction::Redirect { asn, value }),
            (0u8..64).prop_map(|dscp| FlowAction::MarkDscp { dscp }),
        ]
    }

    fn flowspec() -> impl Strategy<Value = Route> {
        (
            net(),
            prop::option::of(net()),
            prop::collection::vec(prop::arbitrary::any::<u8>(), 0..3),
            (ranges(), ranges(), ranges(), ranges()),
            prop::option::of((prop::arbitrary::any::<u8>(), prop::arbitrary::any::<u8>())),
            prop::option::of(prop_oneof![
                Just(Fragment::IsFragment),
                Just(Fragment::First),
                Just(Fragment::Last),
                Just(Fragment::NotFragment),
            ]),
            action(),
        )
            .prop_map(
                |(dst, src, protocols, (sp, dp, it, pl), flags, fragment, action)| {
                    // A source prefix must be of the destination's family.
                    let src = src.filter(|s| s.addr().is_ipv6() == dst.addr().is_ipv6());
                    Route::FlowSpec(FlowSpecRule {
                        dst,
                        src,
                        protocols,
                        src_ports: sp,
                        dst_ports: dp,
                        icmp_types: it,
                        packet_lengths: pl,
                        tcp_flags: flags
                            .map(|(set, unset)| TcpFlags {
                                set,
                                unset: unset & !set,
                            })
                            .filter(|t| t.set | t.unset != 0),
                        fragment,
                        action,
                    })
                },
            )
    }

    fn unicast() -> impl Strategy<Value = Route> {
        (
            net(),
            prop::arbitrary::any::<bool>(),
            prop::collection::vec(prop::arbitrary::any::<u32>(), 0..3),
        )
            .prop_map(|(prefix, blackhole, extra)| {
                let next_hop: IpAddr = if prefix.addr().is_ipv6() {
                    "100::1".parse().unwrap()
                } else {
                    "192.0.2.254".parse().unwrap()
                };
                if blackhole {
                    let mut b = BlackholeRoute::rfc7999(prefix, next_hop);
                    b.communities.extend(extra.into_iter().map(Community));
                    b.communities.sort();
                    b.communities.dedup();
                    b.communities = sorted_like_rfc7999(b.communities.clone());
                    Route::Blackhole(b)
                } else {
                    let mut communities: Vec<Community> = extra
                        .into_iter()
                        .map(Community)
                        .filter(|c| *c != Community::BLACKHOLE)
                        .collect();
                    communities.sort();
                    communities.dedup();
                    Route::Divert(Diversion {
                        prefix,
                        next_hop,
                        communities,
                    })
                }
            })
    }

    proptest! {
        /// What levee reads back from gobgpd's RIB is the route it
        /// announced: reconciliation depends on it.
        #[test]
        fn a_path_reads_back_as_its_route(r in prop_oneof![flowspec(), unicast()]) {
            let p = path(&r);
            prop_assert_eq!(route(&p), Some(r));
        }
    }

    #[test]
    fn operators_come_back_with_gobgpds_framing_bits() {
        let r = Route::FlowSpec(FlowSpecRule {
            dst_ports: vec![Range::one(53), Range { lo: 1024, hi: 2048 }],
            ..FlowSpecRule::to("192.0.2.1/32".parse().unwrap(), FlowAction::Discard)
        });
        let mut p = path(&r);
        // As ListPath returns them: lengths and end-of-list set.
        let nlri = p.nlri.as_mut().unwrap();
        let mut n = apipb::FlowSpecNlri::decode(nlri.value.as_slice()).unwrap();
        let mut c = apipb::FlowSpecComponent::decode(n.rules[1].value.as_slice()).unwrap();
        c.items[1].op |= 0x10;
        c.items[2].op |= 0x10 | 0x80;
        n.rules[1] = super::any("FlowSpecComponent", &c);
        *nlri = super::any("FlowSpecNLRI", &n);
        assert_eq!(route(&p), Some(r));
    }

    #[test]
    fn other_paths_are_not_levees() {
        let mut p = path(&Route::Blackhole(BlackholeRoute::rfc7999(
            "192.0.2.1/32".parse().unwrap(),
            "192.0.2.254".parse().unwrap(),
        )));
        p.family = Some(apipb::Family {
            afi: Afi::Ip as i32,
            safi: Safi::Evpn as i32,
        });
        assert_eq!(route(&p), None);
        let mut q = path(&Route::FlowSpec(FlowSpecRule::to(
            "192.0.2.1/32".parse().unwrap(),
            FlowAction::Discard,
        )));
        q.pattrs
            .retain(|a| !a.type_url.ends_with("ExtendedCommunitiesAttribute"));
        assert_eq!(route(&q), None, "a FlowSpec rule without an action");
    }
}
